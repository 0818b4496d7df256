"""A tiny conv1d_transpose model for tests of the compile path (compiles in ~0.2 s)."""
import json
import os

import numpy as np

from conv1d_transpose.compile.manifest import MANIFEST_NAME
from conv1d_transpose.graph import build_model, make_spec


def small_model(dtype="float32", form="output_shape", data_format="NWC", out_width=9, seed=0):
    """(spec, filters, ModelProto) of a 2->4 channel, K=3, stride-2 SAME layer."""
    shape = (1, out_width, 4) if data_format == "NWC" else (1, 4, out_width)
    spec = make_spec(None, (3, 4, 2), shape, 2, "SAME", data_format=data_format, dtype=dtype)
    filters = np.random.default_rng(seed).standard_normal((3, 4, 2)).astype(dtype)
    return spec, filters, build_model(spec, filters, form=form)


def edit_manifest(path, **changes):
    """Rewrite fields of an artifact's manifest.json in place (to fake a foreign artifact)."""
    manifest_path = os.path.join(path, MANIFEST_NAME)
    with open(manifest_path) as file:
        manifest = json.load(file)
    manifest.update(changes)
    with open(manifest_path, "w") as file:
        json.dump(manifest, file)


def plant_wrong_plans(monkeypatch):
    """Make every "plan" candidate of compile/tuning.py build a fast, wrong kernel (same
    shapes, outputs shifted by one), for tests that tuning refuses it. This process only:
    the tuner's own name for records.kernel_from_schedule is replaced, so compiles still
    build the real kernels."""
    import dataclasses

    from conv1d_transpose.compile import tuning

    real = tuning.kernel_from_schedule

    def wrong_for_plans(geometry, tvm_target, schedule):
        if schedule["kind"] == "plan":
            shifted = dataclasses.replace(geometry, pad_begin=geometry.pad_begin + 1)
            return real(shifted, tvm_target, {"kind": "generic"})
        return real(geometry, tvm_target, schedule)

    monkeypatch.setattr(tuning, "kernel_from_schedule", wrong_for_plans)
