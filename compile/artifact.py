"""Artifacts: a compiled library plus the manifest that says what it is.

An artifact is a directory:

    lib.so          the host library (for CUDA targets it also carries the device code)
    manifest.json   format, spec, inputs/outputs, exact target, versions, hashes, ...

A library is machine code: `Artifact.load_module` loads it only after its sha256 matches
the manifest. In our cache a mismatch (a truncated or edited file, a foreign TVM) means
"rebuild", with a warning that says why; an artifact directory the user hands us is
refused with a BackendError that says why.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings

import onnx

from ..graph.errors import ArgumentError, BackendError
from ..graph.onnx_export import spec_from_model
from . import build as _build
from . import cache as _cache
from .cache import ARTIFACT_FORMAT
from .targets import TargetEntry, get_target

MANIFEST_NAME = "manifest.json"


class ArtifactWarning(UserWarning):
    """A cached artifact was unusable (named reason) and is being rebuilt."""


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A verified artifact directory and its manifest."""

    path: str
    manifest: dict

    @property
    def library_path(self) -> str:
        return os.path.join(self.path, self.manifest["library"])

    @property
    def target_name(self) -> str:
        return self.manifest["target_name"]

    @property
    def target(self) -> dict:
        return self.manifest["target"]

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def scheduled(self) -> bool:
        return bool(self.manifest["scheduled"])

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["outputs"]

    @property
    def spec(self):
        """The `Conv1DTransposeSpec` the model was built from, or None."""
        from ..graph.spec import Conv1DTransposeSpec

        data = self.manifest.get("spec")
        return Conv1DTransposeSpec(**data) if data else None

    def verified_library_bytes(self) -> bytes:
        """The library's bytes, read once and checked against the manifest's sha256: pass
        these on (load, upload), never the path, so a file swapped after the check cannot
        be the one that runs."""
        reason = _library_problem(self.path, self.manifest)
        if reason:
            raise BackendError(f"artifact {self.path}: {reason}; refusing to load it")
        with open(self.library_path, "rb") as file:
            data = file.read()
        if hashlib.sha256(data).hexdigest() != self.manifest["library_sha256"]:
            raise BackendError(f"artifact {self.path}: library {self.manifest['library']} "
                               f"changed while being loaded; refusing to load it")
        return data

    def load_module(self):
        """`tvm.runtime.load_module` of the library, after checking its sha256 again.

        The bytes hashed are the bytes loaded: they are read once, checked, and loaded
        from a private copy, so a library swapped or rewritten after the check (in a
        directory others can write to) is never the one that runs.
        """
        import tvm

        data = self.verified_library_bytes()
        with tempfile.TemporaryDirectory(prefix="conv1d-transpose-load-") as private:
            copy = os.path.join(private, os.path.basename(self.library_path))
            with open(copy, "wb") as file:
                file.write(data)
            return tvm.runtime.load_module(copy)  # dlopen maps it; the file can go


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


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


def build_options(entry: TargetEntry) -> dict:
    """Choices outside the target dict that change the code produced (part of the key)."""
    options = {}
    if entry.is_cross:
        options["cross_compiler"] = entry.cross_compiler
    if entry.family == "cuda":
        options["cuda_device_code"] = "nvcc-fatbin" if shutil.which("nvcc") else "source"
        if shutil.which("nvcc"):
            options["nvcc_flags"] = list(_build.NVCC_FLAGS)
    return options


def _expected(entry: TargetEntry, model_sha256: str | None, key: str | None) -> dict:
    expected = {"target": entry.target_dict()}
    if model_sha256:
        expected["model_sha256"] = model_sha256
    if key:
        expected["cache_key"] = key
    return expected


# Manifest keys the runtime reads, and their JSON types.
_REQUIRED = {"library": str, "library_sha256": str, "inputs": list, "outputs": list,
             "target": dict, "target_name": str, "family": str, "scheduled": bool}


def artifact_problem(path: str, expected: dict | None = None) -> str | None:
    """Why the artifact at `path` cannot be used, or None when it can.

    Checks: a readable manifest of our format with the keys the runtime reads, the TVM
    version against the installed one, every key of `expected` (e.g. target,
    model_sha256, cache_key) against the manifest, and the library: a plain file (no
    path, no symbolic link) inside `path` whose sha256 is the manifest's.
    """
    manifest_path = os.path.join(path, MANIFEST_NAME)
    try:
        with open(manifest_path, encoding="utf-8") as file:
            manifest = json.load(file)
    except FileNotFoundError:
        return f"no {MANIFEST_NAME}"
    except (OSError, ValueError) as error:
        return f"{MANIFEST_NAME} is unreadable ({error})"
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        return f"manifest format is {got!r}, expected {ARTIFACT_FORMAT!r}"
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            return f"manifest {key} is {manifest.get(key)!r}, expected a {kind.__name__}"
    installed = _cache.versions()["tvm"]
    if manifest.get("tvm_version") != installed:
        return (f"built by TVM {manifest.get('tvm_version')!r}, but TVM {installed!r} is "
                f"installed")
    for key, value in (expected or {}).items():
        if manifest.get(key) != value:
            return f"manifest {key} is {manifest.get(key)!r}, expected {value!r}"
    return _library_problem(path, manifest)


def _library_problem(path: str, manifest: dict) -> str | None:
    name = manifest.get("library")
    if not isinstance(name, str) or not name or name in (".", "..") or \
            os.path.basename(name) != name or "\0" in name:
        return f"library {name!r} is not a file name inside the artifact directory"
    library = os.path.join(path, name)
    if os.path.islink(library):
        return f"library {name!r} is a symbolic link"
    if not os.path.isfile(library):
        return f"library {name!r} is missing"
    digest = sha256_file(library)
    if digest != manifest.get("library_sha256"):
        return (f"library {manifest['library']} has sha256 {digest[:16]}..., the manifest "
                f"says {str(manifest.get('library_sha256'))[:16]}... (changed or truncated)")
    return None


def _read(path: str) -> Artifact:
    with open(os.path.join(path, MANIFEST_NAME), encoding="utf-8") as file:
        return Artifact(path=os.path.abspath(path), manifest=json.load(file))


def load_artifact(path, expected: dict | None = None) -> Artifact:
    """A user-given artifact directory, verified (see `artifact_problem`).

    Raises:
      BackendError (a ValueError) naming the directory and what is wrong with it.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise BackendError(f"artifact {path!r} is not a directory")
    reason = artifact_problem(path, expected)
    if reason:
        raise BackendError(f"artifact {path}: {reason}")
    return _read(path)


def write_artifact(directory: str, model: onnx.ModelProto, entry: TargetEntry, *,
                   model_sha256: str, cache_key: str | None, options: dict) -> dict:
    """Import, lower, build and export `model` for `entry` into `directory`; returns the
    manifest (also written there)."""
    from .importer import import_onnx, model_opset

    started = time.perf_counter()
    mod = import_onnx(model)
    result = _build.build(mod, entry)
    export = _build.export_library(result, directory)
    inputs, outputs = _value_infos(model)
    manifest = {
        "format": ARTIFACT_FORMAT,
        "library": export["library"],
        "library_sha256": sha256_file(os.path.join(directory, export["library"])),
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
        "options": {**options, **result.options, **export["options"]},
        "tvm_version": _cache.versions()["tvm"],
        "tvm_ffi_version": _cache.versions()["tvm_ffi"],
        "package_version": _cache.versions()["package"],
        "compiler_version": _cache.versions()["compiler"],
        "cache_key": cache_key,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
        file.write("\n")
    return manifest


def _as_model(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(model):
        return onnx.load(os.fspath(model))
    raise ArgumentError(f"model must be an onnx.ModelProto or a path to an .onnx file, "
                        f"got {model!r}")


def compile_model(model, target_name="host", *, targets=None, cache_dir=None,
                  out_dir=None) -> Artifact:
    """The artifact of `model` for `target_name`, from the cache or freshly built.

    Args:
      model: an onnx.ModelProto (or a path to an .onnx file).
      target_name: a name in targets.yaml (or a `TargetEntry`).
      targets: a mapping from `load_targets`, or a path to a targets.yaml.
      cache_dir: the cache directory (default `cache.default_cache_dir()`).
      out_dir: also copy the artifact to this directory (replacing an artifact there)
        and return that copy.
    Raises:
      ArgumentError / BackendError (ValueError): unknown target, a target that cannot
      be built here, a private-cache violation, or a failed build.
    """
    model = _as_model(model)
    _require_tvm()
    entry = get_target(target_name, targets)
    can_build, reason, _, _ = entry.capabilities()
    if not can_build:
        hint = ""
        if entry.is_cross and entry.cross_compiler and "apt-get" not in reason and \
                not shutil.which(entry.cross_compiler):
            hint = _build.install_hint(entry.cross_compiler)
        raise BackendError(f"target {entry.name!r}: {reason}{hint}")
    data = model_bytes(model)
    model_sha256 = hashlib.sha256(data).hexdigest()
    options = build_options(entry)
    key = _cache.cache_key(model_sha256, entry.target_dict(), options)
    root = _cache.open_cache_dir(cache_dir)
    final = os.path.join(root, key)
    expected = _expected(entry, model_sha256, key)

    artifact = _cached(final, expected, warn=True)
    if artifact is None:
        try:
            artifact = _build_into_cache(root, key, final, expected, model, entry,
                                         model_sha256, options)
        except OSError as error:  # a full disk, a read-only or vanished cache directory
            raise BackendError(f"cannot build into cache_dir={root!r}: {_os_reason(error)}; "
                               f"free space or fix its permissions, or point "
                               f"{_cache.ENV_CACHE_DIR} at another directory") from None
    if out_dir is not None:
        try:
            artifact = _copy_artifact(artifact, os.fspath(out_dir), expected)
        except OSError as error:
            raise BackendError(f"cannot write out_dir={os.fspath(out_dir)!r}: "
                               f"{_os_reason(error)}") from None
    return artifact


def _require_tvm() -> None:
    try:
        import tvm  # noqa: F401
    except (ImportError, OSError) as error:  # OSError: libtvm.so present but unloadable
        raise BackendError(f"TVM is not importable: {error}") from None


def _os_reason(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}"


def _build_into_cache(root, key, final, expected, model, entry, model_sha256,
                      options) -> Artifact:
    with _cache.key_lock(root, key):
        # Another process may have built it while we waited for the lock.
        artifact = _cached(final, expected, warn=False)
        if artifact is not None:
            return artifact
        _cache.clean_stale(root, key)  # what a crashed builder of this key left behind
        _cache.discard(final)
        temp = _cache.make_temp_dir(root, key)
        try:
            write_artifact(temp, model, entry, model_sha256=model_sha256,
                           cache_key=key, options=options)
            _cache.publish(temp, final)  # False: another builder won; use theirs
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return load_artifact(final, expected)


def _cached(final: str, expected: dict, warn: bool) -> Artifact | None:
    if not os.path.isdir(final):
        return None
    reason = artifact_problem(final, expected)
    if reason is None:
        return _read(final)
    if warn:
        warnings.warn(f"rebuilding cached artifact {final}: {reason}", ArtifactWarning,
                      stacklevel=3)
    return None


def _copy_artifact(artifact: Artifact, out_dir: str, expected: dict) -> Artifact:
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and os.listdir(out_dir) and \
            not os.path.isfile(os.path.join(out_dir, MANIFEST_NAME)):
        raise ArgumentError(f"out_dir={out_dir!r} exists and is not an artifact directory; "
                            f"refusing to replace it")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    temp = _cache.make_temp_dir(parent)
    try:
        for name in (artifact.manifest["library"], MANIFEST_NAME):
            shutil.copy2(os.path.join(artifact.path, name), os.path.join(temp, name))
        os.chmod(temp, 0o755)
        # The old artifact is deleted only once the new one is in place: a crash in between
        # leaves it whole in a .trash-* directory beside out_dir.
        old = _cache.move_aside(out_dir)
        try:
            os.rename(temp, out_dir)
        except BaseException:
            if old is not None:
                os.rename(os.path.join(old, "old"), out_dir)
                os.rmdir(old)
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return load_artifact(out_dir, expected)

