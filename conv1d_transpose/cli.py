"""The `conv1d-transpose` command line."""
from __future__ import annotations

import functools
import os
import statistics
import sys
import time
import warnings

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from .graph.errors import Conv1DTransposeError
from .graph.reference import max_error
from .workloads import DEFAULT_WORKLOAD, Workload, find_workload

# Piped output (CI logs, files) gets a wide console rather than rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)


def _friendly_errors(command):
    """Our ValueErrors become a one-line message and exit code 2, not a traceback."""
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
    from .workloads import load_workloads

    flags = {k: v for k, v in layer.items() if k != "workloads_file"}
    if any(v is not None for v in flags.values()):
        if only:
            raise click.UsageError("--only selects from the suite; it cannot be combined "
                                   "with --workload or layer flags")
        return [resolve_workload(**layer)]
    workloads = load_workloads(layer["workloads_file"])
    wanted = [v.strip() for value in only for v in value.split(",") if v.strip()]
    unknown = [n for n in wanted if n not in {w.name for w in workloads}]
    if unknown:
        raise click.UsageError(f"--only: no workload {', '.join(map(repr, unknown))}; "
                               f"known: {', '.join(w.name for w in workloads)}")
    return [w for w in workloads if w.name in wanted] if wanted else workloads


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conv1d-transpose")
def main():
    """TensorFlow's tf.nn.conv1d_transpose: exact, exported as ONNX, compiled by TVM."""


@main.command()
@layer_options
@click.option("--dtype", default="float32", show_default=True)
@click.option("--backend", default="auto", show_default=True)
@click.option("--target", default="host", show_default=True)
@click.option("--calls", default=20, show_default=True, help="Timed calls per backend.")
@_friendly_errors
def demo(dtype, backend, target, calls, **layer):
    """Run one layer on the host CPU, check it against the reference, time it."""
    from . import Conv1DTranspose
    workload = resolve_workload(**layer)
    spec = workload.spec(dtype)
    x, f = workload.arrays(dtype)
    console.print(f"[bold]{workload.name}[/]: input {list(spec.input_shape)} -> output "
                  f"{list(spec.output_shape)}, filters {list(spec.filters_shape)}, "
                  f"strides={spec.stride}, padding={spec.padding}, dilations={spec.dilation}, "
                  f"{spec.data_format}, {dtype}, {spec.flops / 1e6:.1f} MFLOP")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops = {"requested": Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding,
                                            spec.data_format, spec.dilation, backend=backend,
                                            target=target)}
    for warning in caught:
        console.print(f"[yellow]note:[/] {warning.message}")
    if ops["requested"].backend != "onnxruntime:cpu" and dtype != "float64":
        ops["reference backend"] = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding,
                                                   spec.data_format, spec.dilation,
                                                   backend="onnxruntime")
    table = Table(title=f"{workload.name} on target {target!r}")
    for column in ("backend", "max abs error vs reference", "verdict", "median ms", "GFLOP/s"):
        table.add_column(column, justify="right" if column != "backend" else "left")
    failed = False
    for role, op in ops.items():
        y = op(x)
        error, ok = max_error(y, x, f, spec)
        failed |= not ok
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            op(x)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        table.add_row(f"{op.backend} ({role})", f"{error:.2e}", "[green]OK[/]" if ok else "[red]FAIL[/]",
                      f"{median * 1e3:.3f}", f"{spec.flops / median / 1e9:.1f}")
    console.print(table)
    tf_line = _tensorflow_check(x, f, spec)
    if tf_line:
        console.print(tf_line)
    if failed:
        sys.exit(1)


def _tensorflow_check(x, f, spec) -> str | None:
    try:
        import os
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
    except ImportError:
        return "TensorFlow not installed: skipped the TF oracle (pip install '.[reference]')."
    y = tf.nn.conv1d_transpose(x, f, list(spec.output_shape), spec.stride, spec.padding,
                               spec.data_format, spec.dilation).numpy()
    error, ok = max_error(y, x, f, spec)
    return f"TensorFlow {tf.__version__} on the same call: max abs error vs reference {error:.2e} ({'OK' if ok else 'FAIL'})"


@main.command()
@layer_options
@click.option("--dtype", default="float32", show_default=True)
@click.option("--form", type=click.Choice(["output_shape", "explicit"]), default="output_shape",
              show_default=True, help="ConvTranspose form (explicit: pads + output_padding).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option("--filters-input", is_flag=True, help="Make the filters a graph input instead of an initializer.")
@click.option("--filters", "filters_path", type=click.Path(exists=True, dir_okay=False),
              help="A .npy of [K, out, in] filters (default: random, deterministic).")
@click.option("--dynamic-batch", is_flag=True, help="Symbolic batch dimension.")
@click.option("--dynamic-width", is_flag=True,
              help="Symbolic widths (needs O = W*s for SAME, (W-1)*s + dk for VALID).")
@click.option("--portable", is_flag=True, help="The explicit-pads form every measured consumer runs right.")
@click.option("--function", "as_function", is_flag=True, help="One node calling an ONNX local function.")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False))
@_friendly_errors
def export(dtype, form, opset, filters_input, filters_path, dynamic_batch, dynamic_width,
           portable, as_function, output_path, **layer):
    """Write the ONNX model of a layer."""
    import onnx
    from .graph.onnx_export import DEFAULT_OPSET, build_model
    workload = resolve_workload(**layer)
    spec = workload.spec(dtype)
    f = np.load(filters_path, allow_pickle=False) if filters_path else workload.arrays(dtype)[1]
    if filters_path and tuple(f.shape) != spec.filters_shape:
        raise click.UsageError(f"--filters {filters_path} has shape {f.shape}; the layer "
                               f"needs {list(spec.filters_shape)}")
    model = build_model(spec, None if filters_input else f, form=form, portable=portable,
                        opset=opset or DEFAULT_OPSET, name=workload.name,
                        dynamic_batch=dynamic_batch, dynamic_width=dynamic_width,
                        as_function=as_function)
    onnx.save(model, output_path)
    form_used = dict((p.key, p.value) for p in model.metadata_props)["conv1d_transpose.form"]
    console.print(f"wrote {output_path}: {workload.name}, input {list(spec.input_shape)}, "
                  f"output {list(spec.output_shape)}, form {form_used}"
                  + (", dynamic batch" if dynamic_batch else "")
                  + (", dynamic width" if dynamic_width else "")
                  + (", as a function" if as_function else ""))


targets_file_option = click.option(
    "--targets", "targets_file", type=click.Path(exists=True, dir_okay=False),
    envvar="CONV1D_TRANSPOSE_TARGETS",
    help="A targets.yaml of your own (default: the packaged one; env CONV1D_TRANSPOSE_TARGETS).")


@main.command("targets")
@targets_file_option
@_friendly_errors
def list_targets(targets_file):
    """List the targets and what this machine can do for each (build? run?)."""
    from .compile.targets import default_targets_path, load_targets
    entries = load_targets(targets_file)
    table = Table(title=f"targets from {targets_file or default_targets_path()}")
    for column in ("target", "TVM target", "build here", "run here", "description"):
        table.add_column(column, overflow="fold")
    for entry in entries.values():
        can_build, build_reason, can_run, run_reason = entry.capabilities()
        table.add_row(entry.name, _target_text(entry.target_dict()),
                      ("[green]" if can_build else "[red]") + build_reason,
                      ("[green]" if can_run else "[yellow]") + run_reason, entry.description)
    console.print(table)


def _target_text(target: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in target.items())


@main.command("compile")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="host", show_default=True, help="A name in targets.yaml.")
@targets_file_option
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Artifact cache (default: ~/.cache/conv1d-transpose; env CONV1D_TRANSPOSE_CACHE_DIR).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the artifact (library, weights, manifest.json) to.")
@_friendly_errors
def compile_command(model_path, target, targets_file, cache_dir, out_dir):
    """Compile an ONNX model with TVM for a target into a verified artifact."""
    from .compile.artifact import compile_model
    start = time.perf_counter()
    artifact = compile_model(model_path, target, targets=targets_file, cache_dir=cache_dir,
                             out_dir=out_dir)
    seconds = time.perf_counter() - start
    manifest = artifact.manifest
    console.print(f"wrote {artifact.path} for target {target!r} in {seconds:.1f} s "
                  f"({_target_text(manifest['target'])})")
    console.print(f"  library {os.path.basename(artifact.library_path)} sha256 "
                  f"{manifest['library_sha256'][:16]}..., TVM {manifest['tvm_version']}")
    if manifest.get("params"):
        params = manifest["params"]
        console.print(f"  weights {params['file']}: {len(params['tensors'])} tensor(s), "
                      f"{params['bytes'] / 1e6:.1f} MB, passed to main after the inputs")
    if artifact.scheduled:
        console.print("  kernel: the scheduled polyphase conv1d_transpose kernel")
        console.print(f"  schedule: {_schedule_note(artifact, target, targets_file)}")
    else:
        console.print("  [yellow]kernel: no scheduled kernel for this model on this target: "
                      "TVM's default lowering (correct, but far slower than onnxruntime)[/]")


def _schedule_note(artifact, target, targets_file) -> str:
    """Whether a tuning record shaped the kernel, or the generic hand schedule did."""
    from .compile import tuning
    from .compile.kernels import Geometry, kernel_geometry
    from .compile.targets import get_target

    entry = get_target(target, targets_file)
    spec = artifact.spec
    if entry.family != "cpu" or spec is None:
        return "the generic hand schedule"
    record = tuning.lookup(kernel_geometry(Geometry.from_spec(spec)), entry.tvm_target())
    if record is None:
        return ("the generic hand schedule (no tuning record for this shape on this target; "
                "`conv1d-transpose tune` can find a faster one)")
    measured = record.measured
    return (f"tuned ({measured.get('chosen')}: {measured.get('ms')} ms vs generic "
            f"{measured.get('generic_ms')} ms, measured {measured.get('date')})")


@main.command("run")
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A .npy with the model's input.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="Write the output .npy here.")
@click.option("--target", default=None, help="Target to run on (default: the artifact's).")
@targets_file_option
@_friendly_errors
def run_command(artifact_dir, input_path, output_path, target, targets_file):
    """Run a compiled artifact (verified before loading) on an input .npy."""
    from .compile.artifact import load_artifact
    from .runtime.session import open_tvm_session
    artifact = load_artifact(artifact_dir)
    session = open_tvm_session(artifact_dir, target or artifact.target_name, targets=targets_file)
    x = np.load(input_path, allow_pickle=False)
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    (y,) = session.run(None, {name: x})
    seconds = time.perf_counter() - start
    timing = ("on an emulated device (timings mean nothing there)"
              if getattr(session, "emulated", False) else f"in {seconds * 1e3:.2f} ms")
    console.print(f"{session.backend}: input {list(x.shape)} {x.dtype} -> output "
                  f"{list(y.shape)} {y.dtype} {timing}")
    if output_path:
        np.save(output_path, y)
        console.print(f"wrote {output_path}")


def _register_commands():
    from .bench import bench
    from .device import device
    from .portability import portability
    from .tune import tune
    for command in (bench, device, portability, tune):
        main.add_command(command)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
