"""`conv1d-transpose tune`: search the kernel's schedule for layers on a target, verify,
and record the winner in a tuning database (compile/tuning.py) that compiles then use
(compile/records.py)."""
from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from .workloads import Workload

console = Console(width=None if sys.stdout.isatty() else 140)


def _make_command():
    # Built on first use, as bench's is: the command reuses cli.py's layer flags and
    # cli.py imports this module to register it.
    from .cli import _friendly_errors, layer_options, select_workloads

    @click.command("tune")
    @layer_options
    @click.option("--only", multiple=True, metavar="NAME",
                  help="Only these workloads of the suite (repeat, or comma-separated).")
    @click.option("--target", default="host", show_default=True,
                  help="A CPU target in targets.yaml: one this machine runs, or one with an "
                       "`rpc:` block (tuned on that device over TVM RPC).")
    @click.option("--targets", "targets_file", type=click.Path(exists=True, dir_okay=False),
                  envvar="CONV1D_TRANSPOSE_TARGETS", help="A targets.yaml of your own.")
    @click.option("--dtype", default="float32", show_default=True)
    @click.option("--trials", default=0, show_default=True, type=click.IntRange(min=0),
                  help="MetaSchedule trials per layer, on top of the plan search (0: plans only).")
    @click.option("--resume", is_flag=True,
                  help="Skip layers the database already has a record for, and continue "
                       "MetaSchedule searches where they stopped.")
    @click.option("--database", type=click.Path(dir_okay=False),
                  help="Records file (default: ~/.local/share/conv1d-transpose/tuning.json; "
                       "env CONV1D_TRANSPOSE_TUNING). Compiles read it.")
    @click.option("--processes", default=5, show_default=True, type=click.IntRange(min=0),
                  help="Fresh processes that time the finalists, one after another; a "
                       "schedule must beat the generic one in each (0: this process only).")
    @_friendly_errors
    def tune(only, target, targets_file, dtype, trials, resume, database, processes, **layer):
        """Tune the kernel for layers on a CPU target (default: every workload of the
        suite); compiles then apply the records.

        Every candidate schedule is checked against the numpy reference before it is
        timed; the finalists are re-timed interleaved with the generic schedule in fresh
        processes, and the record keeps the correct one that is fastest in every process
        (the generic one unless another is at least 3% faster in each).
        """
        layers = select_workloads(only, layer)
        _tune(layers, target, targets_file, dtype, trials, resume, database, processes)

    return tune


def __getattr__(name):
    if name == "tune":
        if "_command" not in globals():
            command = _make_command()
            globals().setdefault("_command", command)
        return globals()["_command"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _tune(layers: list[Workload], target_name, targets_file, dtype, trials, resume, database,
          processes=5):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from .compile import records, tuning
    from .compile.kernels import Geometry, kernel_geometry
    from .compile.targets import get_target, rpc_address, rpc_endpoint
    from .graph.errors import BackendError

    entry = get_target(target_name, targets_file)
    if entry.family != "cpu":
        raise BackendError(f"target {entry.name!r} is a {entry.family} target; tuning runs "
                           f"CPU (llvm) kernels, on this machine or on a device over RPC")
    can_build, build_reason, can_run, run_reason = entry.capabilities()
    if not (can_build and can_run):
        hint = ("; a target with an `rpc:` block in targets.yaml is tuned on its device"
                if can_build and entry.is_cross else "")
        raise BackendError(f"target {entry.name!r} cannot be tuned here: "
                           f"{build_reason if not can_build else run_reason}{hint}")
    database = database or records.default_database()
    target = entry.tvm_target()
    store = records.RecordStore(database)
    remote = tuning.RemoteTarget.from_entry(entry) if entry.rpc else None
    endpoint = rpc_endpoint(entry.rpc) if remote else {}
    where = f", on the device over RPC ({rpc_address(endpoint)})" if remote else ""
    console.print(f"tuning {len(layers)} layer(s) for target {entry.name!r} "
                  f"({records.target_key(target)}){where}, {trials} MetaSchedule trials each; "
                  f"records -> {database}")
    if "emulated" in endpoint:
        console.print("[yellow]note[/]: an emulated device's times are qemu's, not a board's: "
                      "this checks the tuning path; its records choose nothing real")
    table = Table(title=f"tuning on {entry.name}")
    for column in ("layer", "generic ms", "tuned ms", "speedup", "GFLOP/s", "schedule",
                   "checked", "refused"):
        table.add_column(column, justify="left" if column in ("layer", "schedule") else "right")
    with Progress(*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        for workload in layers:
            spec = workload.spec(dtype)
            key = records.workload_key(kernel_geometry(Geometry.from_spec(spec)))
            if resume and store.get(key, records.target_key(target)) is not None:
                table.add_row(workload.name, "", "", "", "", "recorded before (--resume)", "", "")
                continue
            task = progress.add_task(workload.name, total=1)

            def report(description, done, total, task=task, name=workload.name):
                progress.update(task, description=f"{name}: {description}", completed=done,
                                total=max(total, 1))

            result = tuning.tune(spec, target, trials=trials, database=database,
                                 resume=resume, progress=report, processes=processes,
                                 remote=remote)
            progress.remove_task(task)
            measured = result.record.measured
            table.add_row(workload.name, f"{result.generic_ms:.3g}", f"{result.best_ms:.3g}",
                          f"{result.speedup:.2f}x", f"{measured['gflops']:.1f}",
                          measured["chosen"], str(len(result.candidates)),
                          str(len(result.refused)))
            for candidate in result.refused:
                console.print(f"  [yellow]refused[/] {workload.name} {candidate.name}: "
                              f"{candidate.problem}")
    console.print(table)
    console.print(f"wrote {database}; compiles for {entry.name!r} now use these records "
                  f"(a cached artifact built without them is rebuilt).")
