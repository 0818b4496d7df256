"""One layer from the shell: `demo` runs it against the reference, `export` writes its
ONNX model."""
from __future__ import annotations

import os
import statistics
import sys
import time
import warnings

import click
import numpy as np
from rich.table import Table

from ..graph.reference import max_error
from .options import console, friendly_errors, layer_options, resolve_workload


@click.command()
@layer_options
@click.option("--dtype", default="float32", show_default=True)
@click.option("--backend", default="auto", show_default=True)
@click.option("--target", default="host", show_default=True)
@click.option("--calls", default=20, show_default=True, help="Timed calls per backend.")
@friendly_errors
def demo(dtype, backend, target, calls, **layer):
    """Run one layer on the host CPU, check it against the reference, time it."""
    from .. import Conv1DTranspose
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
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
    except ImportError:
        return "TensorFlow not installed: skipped the TF oracle (pip install '.[reference]')."
    y = tf.nn.conv1d_transpose(x, f, list(spec.output_shape), spec.stride, spec.padding,
                               spec.data_format, spec.dilation).numpy()
    error, ok = max_error(y, x, f, spec)
    return f"TensorFlow {tf.__version__} on the same call: max abs error vs reference {error:.2e} ({'OK' if ok else 'FAIL'})"


@click.command()
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
@friendly_errors
def export(dtype, form, opset, filters_input, filters_path, dynamic_batch, dynamic_width,
           portable, as_function, output_path, **layer):
    """Write the ONNX model of a layer."""
    import onnx
    from ..graph.onnx_export import DEFAULT_OPSET, build_model
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
