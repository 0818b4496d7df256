"""Targets and artifacts from the shell: `targets` lists what this machine can build and
run, `compile` builds a model into a verified artifact for a target, `run` runs one."""
from __future__ import annotations

import os
import time

import click
import numpy as np
from rich.table import Table

from .options import console, friendly_errors, targets_file_option


@click.command("targets")
@targets_file_option
@friendly_errors
def list_targets(targets_file):
    """List the targets and what this machine can do for each (build? run?)."""
    from ..compile.targets import default_targets_path, load_targets
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


@click.command("compile")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="host", show_default=True, help="A name in targets.yaml.")
@targets_file_option
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Artifact cache (default: ~/.cache/conv1d-transpose; env CONV1D_TRANSPOSE_CACHE_DIR).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the artifact (library, weights, manifest.json) to.")
@friendly_errors
def compile_command(model_path, target, targets_file, cache_dir, out_dir):
    """Compile an ONNX model with TVM for a target into a verified artifact."""
    from ..compile.artifact import compile_model
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
    from ..compile import records
    from ..compile.kernels import Geometry, kernel_geometry
    from ..compile.targets import get_target

    entry = get_target(target, targets_file)
    spec = artifact.spec
    if entry.family != "cpu" or spec is None:
        return "the generic hand schedule"
    record = records.lookup(kernel_geometry(Geometry.from_spec(spec)), entry.tvm_target())
    if record is None:
        return ("the generic hand schedule (no tuning record for this shape on this target; "
                "`conv1d-transpose tune` can find a faster one)")
    measured = record.measured
    return (f"tuned ({measured.get('chosen')}: {measured.get('ms')} ms vs generic "
            f"{measured.get('generic_ms')} ms, measured {measured.get('date')})")


@click.command("run")
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A .npy with the model's input.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="Write the output .npy here.")
@click.option("--target", default=None, help="Target to run on (default: the artifact's).")
@targets_file_option
@friendly_errors
def run_command(artifact_dir, input_path, output_path, target, targets_file):
    """Run a compiled artifact (verified before loading) on an input .npy."""
    from ..compile.loader import load_artifact
    from ..runtime.session import open_tvm_session
    artifact = load_artifact(artifact_dir)
    session = open_tvm_session(artifact_dir, target or artifact.target_name,
                               targets=targets_file)
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
