"""What the commands share: the console, the layer flags and how they name a workload, the
--targets option, and the one translation of our errors into click's."""
from __future__ import annotations

import functools
import sys

import click
from rich.console import Console

from ..graph.errors import Conv1DTransposeError
from ..workloads import DEFAULT_WORKLOAD, Workload, find_workload, load_workloads

# Piped output (CI logs, files) gets a wide console rather than rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)


def friendly_errors(command):
    """Our errors (Conv1DTransposeError, a ValueError) become a one-line message and exit
    code 2, as click's own usage errors do, not a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Conv1DTransposeError as error:
            raise click.UsageError(str(error)) from None
    return wrapper


def layer_options(command):
    """`--workload NAME` or TF-style layer flags, resolved into a Workload."""
    options = [
        click.option("--workload", "workload_name", help=f"A workload from the suite (default {DEFAULT_WORKLOAD})."),
        click.option("--workloads", "workloads_file", type=click.Path(exists=True, dir_okay=False),
                     help="A workloads.yaml of your own."),
        click.option("--batch", type=int), click.option("--width", type=int, help="Input width W."),
        click.option("--cin", type=int), click.option("--cout", type=int),
        click.option("--kernel", type=int), click.option("--stride", type=int),
        click.option("--padding", type=str), click.option("--dilation", type=int),
        click.option("--data-format", type=str), click.option("--out-width", type=int),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def only_option(command):
    """`--only NAME`: suite commands (bench, tune) narrowed to some workloads."""
    return click.option("--only", multiple=True, metavar="NAME",
                        help="Only these workloads of the suite (repeat, or comma-separated).")(
        command)


targets_file_option = click.option(
    "--targets", "targets_file", type=click.Path(exists=True, dir_okay=False),
    envvar="CONV1D_TRANSPOSE_TARGETS",
    help="A targets.yaml of your own (default: the packaged one; env CONV1D_TRANSPOSE_TARGETS).")


def split_list(values) -> list[str]:
    """Repeated, comma-separated option values as one list: ('a,b', 'c') -> [a, b, c]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def resolve_workload(workload_name, workloads_file, **flags) -> Workload:
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return find_workload(workload_name or DEFAULT_WORKLOAD, workloads_file)
    if workload_name:
        base = find_workload(workload_name, workloads_file)
        return Workload(**{**base.__dict__, **given})
    missing = {"width", "cin", "cout", "kernel", "stride"} - set(given)
    if missing:
        raise click.UsageError(f"layer flags need --{' --'.join(sorted(missing))} "
                               f"(or --workload NAME)")
    given.setdefault("batch", 1)
    return Workload(name="custom", **given)


def select_workloads(only, layer) -> list[Workload]:
    """The layers a suite command (bench, tune) runs: the one named by --workload or layer
    flags, else the suite (or --workloads FILE) narrowed by --only (repeatable,
    comma-separated)."""
    flags = {k: v for k, v in layer.items() if k != "workloads_file"}
    if any(v is not None for v in flags.values()):
        if only:
            raise click.UsageError("--only selects from the suite; it cannot be combined "
                                   "with --workload or layer flags")
        return [resolve_workload(**layer)]
    workloads = load_workloads(layer["workloads_file"])
    wanted = split_list(only)
    unknown = [n for n in wanted if n not in {w.name for w in workloads}]
    if unknown:
        raise click.UsageError(f"--only: no workload {', '.join(map(repr, unknown))}; "
                               f"known: {', '.join(w.name for w in workloads)}")
    return [w for w in workloads if w.name in wanted] if wanted else workloads
