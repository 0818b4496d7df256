"""Tune layers for a target: search the kernel's schedule (compile/tuning.py), verify,
and record the winner in a tuning database that compiles then use (compile/records.py),
showing progress and a table of the results. `conv1d-transpose tune` (cli/tune.py) calls
`tune_workloads`."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from .graph.errors import ArgumentError
from .workloads import Workload

console = Console(width=None if sys.stdout.isatty() else 140)


def tune_workloads(layers: list[Workload], target_name, targets_file, dtype, trials, resume,
                   database, processes=5):
    """Tune each layer for the target, print the results as a table, and write the records
    to `database` (the default database where None).

    Raises:
      BackendError: the target is not a CPU target, or cannot be built for or run here.
    """
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


def require_cost_model(trials: int) -> None:
    """Before minutes of plan search: MetaSchedule's trials need xgboost (extra `tune`);
    say so now, not after the plans were timed.

    Raises:
      ArgumentError with the install hint, where xgboost is not installed.
    """
    try:
        import xgboost  # noqa: F401
    except ImportError:
        raise ArgumentError(f"--trials {trials}: MetaSchedule's cost model needs xgboost, "
                            f"which is not installed (pip install 'conv1d-transpose[tune]'); "
                            f"or leave out --trials to search the plans only") from None
