"""Compiling a model into the cache: `compile_model`, the one way an artifact is made.

An artifact is a directory holding the library, the weights and the manifest (see
compile/loader.py for the directory and how it is verified and loaded, and
compile/manifest.py for what the manifest says). `compile_model` finds the artifact of a
model for a target in the content-addressed cache (compile/cache.py) or builds it there:
import, lower, build and export (`write_artifact`), published with one rename under a
lock per key, then verified like any other artifact before it is returned.

In our cache an artifact that fails verification (a truncated or edited file, a foreign
TVM) means "rebuild", with an `ArtifactWarning` that says why; an artifact directory the
user hands us is refused with a BackendError (`loader.load_artifact`).
"""
from __future__ import annotations

import os
import shutil
import time
import warnings

import onnx

from ..graph.errors import ArgumentError, BackendError
from . import build as _build
from . import cache as _cache
from . import model_source as _model_source
from . import params as _params
from .loader import Artifact, load_artifact, sha256_file, verify_artifact
from .manifest import MANIFEST_NAME, expected_manifest, make_manifest, write_manifest
from .model_source import ModelSource
from .targets import TargetEntry, get_target


class ArtifactWarning(UserWarning):
    """A cached artifact was unusable (named reason) and is being rebuilt."""


def build_options(entry: TargetEntry) -> dict:
    """Choices outside the target dict that change the code produced (part of the key)."""
    options = {}
    if entry.is_cross:
        options["cross_compiler"] = entry.cross_compiler
    if entry.family == "cuda":
        options["cuda_device_code"] = "nvcc-fatbin" if shutil.which("nvcc") else "source"
        if shutil.which("nvcc"):
            options["nvcc_flags"] = list(_build.NVCC_FLAGS)
    if entry.family == "cpu":
        # The user's tuning records choose CPU schedules: new records, new libraries.
        # (The shipped records live in compile/, which compiler_version hashes.)
        from .records import databases_digest
        options["tuning"] = databases_digest()
    return options


def write_artifact(directory: str, model: onnx.ModelProto, entry: TargetEntry, *,
                   model_sha256: str, cache_key: str | None, options: dict) -> dict:
    """Import, lower, build and export `model` for `entry` into `directory`; returns the
    manifest (also written there)."""
    from .importer import import_onnx

    started = time.perf_counter()
    mod = import_onnx(model)
    result = _build.build(mod, entry)
    export = _build.export_library(result, directory)
    library_sha256 = sha256_file(os.path.join(directory, export["library"]))
    params = _params.write_params(directory, result.params)
    manifest = make_manifest(model, entry, result, export, library_sha256=library_sha256,
                             params=params, model_sha256=model_sha256, cache_key=cache_key,
                             options=options,
                             build_seconds=round(time.perf_counter() - started, 3))
    write_manifest(directory, manifest)
    return manifest


def compile_model(model, target_name="host", *, targets=None, cache_dir=None,
                  out_dir=None) -> Artifact:
    """The artifact of `model` for `target_name`, from the cache or freshly built.

    Args:
      model: an onnx.ModelProto (or a path to an .onnx file, or a `ModelSource`).
      target_name: a name in targets.yaml (or a `TargetEntry`).
      targets: a mapping from `load_targets`, or a path to a targets.yaml.
      cache_dir: the cache directory (default `cache.default_cache_dir()`).
      out_dir: also copy the artifact to this directory (replacing an artifact there)
        and return that copy.
    Raises:
      ArgumentError / BackendError (ValueError): unknown target, a target that cannot
      be built here, a private-cache violation, or a failed build.
    """
    source = model if isinstance(model, ModelSource) else None
    model = None if source is not None else _model_source.as_model(model)
    _require_tvm()
    entry = get_target(target_name, targets)
    options = build_options(entry)
    root = _cache.open_cache_dir(cache_dir)
    # The cache is read before anything is asked of this machine's build tools: a hit
    # needs no C compiler, nvcc or TVM compiler library (a deployment box running
    # artifacts built elsewhere may have none of them).
    model_sha256 = _cache.read_alias(root, source.recipe) if source is not None else None
    if model_sha256 is None:
        model = _model_source.as_model(source or model)
        model_sha256 = _model_source.model_sha256(model)
    artifact, key, final, expected = _lookup(root, entry, model_sha256, source, options,
                                             warn=model is not None)
    if artifact is None and model is None:
        # No valid artifact where the recipe's record points: make the model after all,
        # and check again (with a warning) under its real key.
        model = source.model()
        model_sha256 = _model_source.model_sha256(model)
        artifact, key, final, expected = _lookup(root, entry, model_sha256, source, options,
                                                 warn=True)
    if artifact is None:
        can_build, reason, _, _ = entry.capabilities()
        if not can_build:
            hint = ""
            if entry.is_cross and entry.cross_compiler and "apt-get" not in reason and \
                    not shutil.which(entry.cross_compiler):
                hint = _build.install_hint(entry.cross_compiler)
            raise BackendError(f"target {entry.name!r}: {reason}{hint}")
        try:
            artifact = _build_into_cache(root, key, final, expected, model, entry,
                                         model_sha256, options)
        except OSError as error:  # a full disk, a read-only or vanished cache directory
            raise BackendError(f"cannot build into cache_dir={root!r}: {_os_reason(error)}; "
                               f"free space or fix its permissions, or point "
                               f"{_cache.ENV_CACHE_DIR} at another directory") from None
    if source is not None and model is not None:
        _cache.write_alias(root, source.recipe, model_sha256)
    if out_dir is not None:
        try:
            artifact = _copy_artifact(artifact, os.fspath(out_dir), expected)
        except OSError as error:
            raise BackendError(f"cannot write out_dir={os.fspath(out_dir)!r}: "
                               f"{_os_reason(error)}") from None
    return artifact


def _lookup(root, entry, model_sha256, source, options, warn):
    """(cached artifact or None, key, directory, expected) for `options`, the build this
    machine would make. For CUDA without nvcc here, an artifact built elsewhere with nvcc
    (device code ready to load) is looked for first: it is what a GPU box without nvcc
    or TVM's compiler should run."""
    candidates = [options]
    if entry.family == "cuda" and options.get("cuda_device_code") == "source":
        candidates.insert(0, {**options, "cuda_device_code": "nvcc-fatbin",
                              "nvcc_flags": list(_build.NVCC_FLAGS)})
    for choice in candidates:
        key = _cache.cache_key(model_sha256, entry.target_dict(), choice)
        final = os.path.join(root, key)
        expected = expected_manifest(entry, model_sha256, key,
                                     source.spec if source is not None else None)
        ours = choice is options
        artifact = _cached(final, expected, warn=warn and ours)
        if artifact is not None or ours:
            return artifact, key, final, expected


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
    artifact, reason = verify_artifact(final, expected)
    if reason is None:
        return artifact
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
        names = [artifact.manifest["library"], MANIFEST_NAME]
        if artifact.manifest.get("params") is not None:
            names.append(_params.PARAMS_NAME)
        for name in names:
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

