"""`conv1d-transpose tune`: the command over conv1d_transpose/tune.py (tune_workloads)."""
from __future__ import annotations

import click

from .options import friendly_errors, layer_options, only_option, select_workloads


@click.command("tune")
@layer_options
@only_option
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
@friendly_errors
def tune(only, target, targets_file, dtype, trials, resume, database, processes, **layer):
    """Tune the kernel for layers on a CPU target (default: every workload of the
    suite); compiles then apply the records.

    Every candidate schedule is checked against the numpy reference before it is
    timed; the finalists are re-timed interleaved with the generic schedule in fresh
    processes, and the record keeps the correct one that is fastest in every process
    (the generic one unless another is at least 3% faster in each).
    """
    from ..tune import require_cost_model, tune_workloads

    if trials:
        require_cost_model(trials)
    layers = select_workloads(only, layer)
    tune_workloads(layers, target, targets_file, dtype, trials, resume, database, processes)
