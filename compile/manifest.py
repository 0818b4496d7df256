"""The manifest: the JSON file that says what an artifact's library is.

`manifest.json` sits beside the library and the weights (see compile/loader.py for the
directory). It records the format, the spec, the inputs and outputs, the exact target,
the versions of everything that built it, and the hashes that tie the library and the
weights to it (the loader checks those: compile/loader.py).

Here: what a manifest holds (`make_manifest`), writing it (`write_manifest`), and reading
it back with every check that needs only the manifest itself (`read_manifest`): our
format, the keys the runtime reads and their types, the weights' entry, the TVM that
built it, and what the caller expects (`expected_manifest`: target, model, cache key).
Reasons are returned as strings, not raised, because the cache rebuilds on them (with a
warning) and a user-given artifact is refused with them.
"""
from __future__ import annotations

import datetime
import json
import os

import onnx

from ..graph.onnx_export import spec_from_model
from . import cache as _cache
from . import params as _params
from .cache import ARTIFACT_FORMAT

MANIFEST_NAME = "manifest.json"
# The model property that says which input shapes a model with free dimensions was
# specialised to (runtime/specialize.py), as {"inputs": {name: [dims]}} in JSON; the
# manifest of an artifact built from it, or from a segment of it, records it.
SPECIALIZED_KEY = "conv1d_transpose.specialized"

# Manifest keys the runtime reads, and their JSON types.
_REQUIRED = {"library": str, "library_sha256": str, "inputs": list, "outputs": list,
             "target": dict, "target_name": str, "family": str, "scheduled": bool}


def make_manifest(model: onnx.ModelProto, entry, result, export: dict, *,
                  library_sha256: str, params: dict | None, model_sha256: str,
                  cache_key: str | None, options: dict, build_seconds: float) -> dict:
    """The manifest of `model` built for `entry` (a `TargetEntry`).

    Args:
      result: the `build.BuildResult`; export: what `build.export_library` returned.
      library_sha256: the exported library's sha256; params: the weights' entry
        (`params.write_params`), None when the library carries them all.
      options: the build options that are part of the cache key (artifact.build_options).
    """
    from .importer import model_opset

    inputs, outputs = _value_infos(model)
    versions = _cache.versions()
    return {
        "format": ARTIFACT_FORMAT,
        "library": export["library"],
        "library_sha256": library_sha256,
        "params": params,
        "model_sha256": model_sha256,
        "model_opset": model_opset(model),
        "spec": _spec_json(model),
        "inputs": inputs,
        "outputs": outputs,
        "target_name": entry.name,
        "target": entry.target_dict(),
        "target_str": str(result.target),
        "family": entry.family,
        "machine": entry.machine,
        "device_code": export["device_code"],
        "linker": export["linker"],
        "scheduled": result.scheduled,
        "specialized": specialization(model),
        "options": {**options, **result.options, **export["options"]},
        "tvm_version": versions["tvm"],
        "tvm_ffi_version": versions["tvm_ffi"],
        "package_version": versions["package"],
        "compiler_version": versions["compiler"],
        "cache_key": cache_key,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": build_seconds,
    }


def write_manifest(directory: str, manifest: dict) -> None:
    with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
        file.write("\n")


def expected_manifest(entry, model_sha256: str | None, cache_key: str | None,
                      spec=None) -> dict:
    """What a manifest must say to be the artifact of this model (`model_sha256`, `spec`:
    a `Conv1DTransposeSpec` or None) for `entry` under `cache_key`; a None is not checked."""
    expected = {"target": entry.target_dict()}
    if spec is not None:
        expected["spec"] = json.loads(spec.to_json())
    if model_sha256:
        expected["model_sha256"] = model_sha256
    if cache_key:
        expected["cache_key"] = cache_key
    return expected


def read_manifest(path: str, expected: dict | None = None):
    """(why the manifest of the artifact directory `path` is unusable, or None; the
    manifest, or None when there is a reason).

    Checks: a readable manifest of our format with the keys the runtime reads, a valid
    weights entry, the TVM version against the installed one, and every key of
    `expected` against the manifest. The files it names are the loader's to check.
    """
    manifest_path = os.path.join(path, MANIFEST_NAME)
    try:
        with open(manifest_path, encoding="utf-8") as file:
            manifest = json.load(file)
    except FileNotFoundError:
        return f"no {MANIFEST_NAME}", None
    except (OSError, ValueError) as error:
        return f"{MANIFEST_NAME} is unreadable ({error})", None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        return f"manifest format is {got!r}, expected {ARTIFACT_FORMAT!r}", None
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            return f"manifest {key} is {manifest.get(key)!r}, expected a {kind.__name__}", None
    reason = "manifest has no params entry" if "params" not in manifest else \
        _params.entry_problem(manifest["params"])
    if reason:
        return reason, None
    installed = _cache.versions()["tvm"]
    if manifest.get("tvm_version") != installed:
        return (f"built by TVM {manifest.get('tvm_version')!r}, but TVM {installed!r} is "
                f"installed"), None
    for key, value in (expected or {}).items():
        if manifest.get(key) != value:
            return f"manifest {key} is {manifest.get(key)!r}, expected {value!r}", None
    return None, manifest


def specialization(model: onnx.ModelProto) -> dict | None:
    """What SPECIALIZED_KEY says of `model` ({"inputs": {name: [dims]}}), or None for a
    model that was not specialised."""
    for prop in model.metadata_props:
        if prop.key == SPECIALIZED_KEY:
            try:
                found = json.loads(prop.value)
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def _value_infos(model: onnx.ModelProto):
    initializers = {i.name for i in model.graph.initializer}

    def describe(value):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name \
            if tensor.elem_type else None
        return {"name": value.name, "shape": dims, "dtype": dtype}

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    outputs = [describe(v) for v in model.graph.output]
    return inputs, outputs


def _spec_json(model: onnx.ModelProto):
    try:
        spec = spec_from_model(model)
    except (ValueError, TypeError, AssertionError):  # foreign or stale metadata: no spec
        return None
    return json.loads(spec.to_json()) if spec is not None else None
