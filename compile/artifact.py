"""Artifacts: a compiled library plus the manifest that says what it is.

An artifact is a directory:

    lib.so          the host library (for CUDA targets it also carries the device code)
    params.bin      the weights: `main`'s trailing parameters (compile/params.py); absent
                    when the model has no large constants
    manifest.json   format, spec, inputs/outputs, exact target, versions, hashes, ...

A library is machine code: `Artifact.load_module` loads it only after its sha256 matches
the manifest; `Artifact.load_params` likewise checks the weights' digest. In our cache a
mismatch (a truncated or edited file, a foreign TVM) means "rebuild", with a warning that
says why; an artifact directory the user hands us is refused with a BackendError that
says why.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
import warnings
import weakref

import onnx

from ..graph.errors import ArgumentError, BackendError
from . import build as _build
from . import cache as _cache
from . import model_source as _model_source
from . import params as _params
from .manifest import (MANIFEST_NAME, expected_manifest, make_manifest, read_manifest,
                       write_manifest)
from .model_source import ModelSource
from .targets import TargetEntry, get_target


class ArtifactWarning(UserWarning):
    """A cached artifact was unusable (named reason) and is being rebuilt."""


class VerifiedLibrary:
    """A private, immutable snapshot of a library's bytes whose sha256 was checked.

    The library file is read once; each chunk is hashed and written to an anonymous
    memory file (`memfd_create`) that is then sealed against every change, so the bytes
    hashed are exactly the bytes TVM loads, and a file swapped or rewritten afterwards
    (even in place) cannot be the one that runs. Where memfd is unavailable (not Linux),
    the bytes are kept in memory and loaded from a private temporary copy instead.

    Measured for demucs-dec1's 64 MB library on the 2-vCPU Zen 4 machine: read + hash +
    copy in one pass 69 ms, against 41 ms per extra hash and ~160 ms for the private copy
    on disk that this replaces.
    """

    _CHUNK = 1 << 20  # fits in L2: each chunk is hashed and copied while cache-hot

    def __init__(self, fd: int | None, data: bytes | None, size: int, sha256: str):
        self._fd, self._data, self.size, self.sha256 = fd, data, size, sha256
        if fd is not None:
            self._finalizer = weakref.finalize(self, os.close, fd)

    @classmethod
    def read(cls, path: str) -> "VerifiedLibrary":
        """Snapshot the file at `path` (its sha256 is `.sha256`; compare it yourself)."""
        digest = hashlib.sha256()
        # The builtin open (not os.open): a library in a cache we may not write to must
        # still be readable.
        with open(path, "rb", buffering=0) as source:
            fd = _memfd()
            if fd is None:
                data = source.read()
                digest.update(data)
                return cls(None, data, len(data), digest.hexdigest())
            try:
                buffer = bytearray(cls._CHUNK)
                view = memoryview(buffer)
                size = 0
                while True:
                    count = source.readinto(buffer)
                    if not count:
                        break
                    digest.update(view[:count])
                    written = 0
                    while written < count:
                        written += os.write(fd, view[written:count])
                    size += count
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            except BaseException:
                os.close(fd)
                raise
        return cls(fd, None, size, digest.hexdigest())

    def bytes(self) -> bytes:
        if self._data is not None:
            return self._data
        return os.pread(self._fd, self.size, 0)

    def load_module(self, name: str = "lib.so"):
        """TVM's module of these bytes."""
        with tempfile.TemporaryDirectory(prefix="conv1d-transpose-load-") as private:
            path = os.path.join(private, name)  # TVM picks the loader by the extension
            if self._fd is None:
                with open(path, "wb") as file:
                    file.write(self._data)
                return _load_module(path)  # dlopen maps it; the file can go
            # A link in a fresh 0700 directory to this process's sealed memfd: dlopen
            # follows it to the sealed bytes. tvm.runtime.load_module would realpath() it
            # into the memfd's name, which is not a path; tvm_ffi's loader (what it calls)
            # takes the link as it is.
            os.symlink(f"/proc/self/fd/{self._fd}", path)
            return _load_module(path)


# A sealed memfd can never again be written, truncated or grown, nor its seals removed.
_SEALS = getattr(fcntl, "F_SEAL_WRITE", 8) | getattr(fcntl, "F_SEAL_SHRINK", 2) | \
    getattr(fcntl, "F_SEAL_GROW", 4) | getattr(fcntl, "F_SEAL_SEAL", 1)


def _memfd() -> int | None:
    create = getattr(os, "memfd_create", None)
    if create is None or not hasattr(fcntl, "F_ADD_SEALS") or \
            not os.path.isdir(f"/proc/self/fd"):
        return None
    try:
        return create("conv1d-transpose-lib", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:  # e.g. a seccomp filter: fall back to bytes and a private file
        return None


def _load_module(path: str):
    """TVM's loader for a library file (the one `tvm.runtime.load_module` calls for a
    .so, without its realpath(), which would turn our link into the memfd's name)."""
    import tvm  # noqa: F401  (registers the Relax VM's loader with tvm_ffi)
    import tvm_ffi
    return tvm_ffi.load_module(path)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A verified artifact directory and its manifest.

    `library`, `params`: the snapshots of the library and of the weights taken when the
    artifact was verified (by `load_artifact` or `compile_model`), or None;
    `load_module` and `load_params` use them instead of reading and hashing the files
    again.
    """

    path: str
    manifest: dict
    library: VerifiedLibrary | None = dataclasses.field(default=None, compare=False,
                                                        repr=False)
    params: list | None = dataclasses.field(default=None, compare=False, repr=False)

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

    def verified_library(self) -> VerifiedLibrary:
        """The library's bytes, checked against the manifest's sha256: the snapshot taken
        when this artifact was verified, else the file read (once) and hashed now."""
        if self.library is not None and \
                self.library.sha256 == self.manifest["library_sha256"]:
            return self.library
        reason, library = _library_problem(self.path, self.manifest, snapshot=True)
        if reason:
            raise BackendError(f"artifact {self.path}: library {self.manifest['library']} "
                               f"changed while being loaded ({reason}); refusing to load it")
        return library

    def verified_library_bytes(self) -> bytes:
        """The library's bytes, checked against the manifest's sha256: pass these on
        (load, upload), never the path, so a file swapped after the check cannot be the
        one that runs."""
        return self.verified_library().bytes()

    def load_module(self):
        """`tvm.runtime.load_module` of the verified library.

        The bytes hashed are the bytes loaded: read once, hashed, and loaded from a
        private sealed copy, so a library swapped or rewritten after the check (in a
        directory others can write to) is never the one that runs.
        """
        return self.verified_library().load_module(os.path.basename(self.library_path))

    def load_params(self) -> list:
        """The weights `main` takes after the inputs (numpy arrays, 64-byte aligned and
        private to this artifact), checked against the manifest's digest; [] when the
        library carries them all."""
        if self.manifest.get("params") is None:
            return []
        if self.params is not None:
            return self.params
        arrays, reason = _params.read_params(
            os.path.join(self.path, _params.PARAMS_NAME), self.manifest["params"])
        if reason:
            raise BackendError(f"artifact {self.path}: {reason}; refusing to load it")
        return arrays


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def artifact_problem(path: str, expected: dict | None = None) -> str | None:
    """Why the artifact at `path` cannot be used, or None when it can.

    Checks: a readable manifest of our format with the keys the runtime reads, the TVM
    version against the installed one, every key of `expected` (e.g. target,
    model_sha256, cache_key) against the manifest, the library: a plain file (no
    path, no symbolic link) inside `path` whose sha256 is the manifest's, and likewise
    the weights file and its digest.
    """
    return _check(path, expected, snapshot=False)[0]


def _check(path: str, expected: dict | None, snapshot: bool):
    """(`artifact_problem`'s reason, the manifest, the library's verified snapshot and the
    weights read when `snapshot` and there is no problem)."""
    reason, manifest = read_manifest(path, expected)
    if reason:
        return reason, None, None, None
    reason, library = _verify_library(path, manifest, snapshot)
    if reason:
        return reason, manifest, None, None
    reason, arrays = _verify_params(path, manifest)
    return reason, manifest, library, (arrays if snapshot else None)


def _library_problem(path: str, manifest: dict, snapshot: bool = False):
    """Why the library of `manifest` in `path` is unusable, or None; with `snapshot`,
    (that reason, the `VerifiedLibrary` read while hashing it, or None)."""
    reason, library = _verify_library(path, manifest, snapshot)
    return (reason, library) if snapshot else reason


def _verify_library(path: str, manifest: dict, snapshot: bool):
    name = manifest.get("library")
    if not isinstance(name, str) or not name or name in (".", "..") or \
            os.path.basename(name) != name or "\0" in name:
        return f"library {name!r} is not a file name inside the artifact directory", None
    library = os.path.join(path, name)
    if os.path.islink(library):
        return f"library {name!r} is a symbolic link", None
    if not os.path.isfile(library):
        return f"library {name!r} is missing", None
    try:
        verified = VerifiedLibrary.read(library) if snapshot else None
    except FileNotFoundError:
        return f"library {name!r} is missing", None
    digest = verified.sha256 if verified is not None else sha256_file(library)
    if digest != manifest.get("library_sha256"):
        return (f"library {manifest['library']} has sha256 {digest[:16]}..., the manifest "
                f"says {str(manifest.get('library_sha256'))[:16]}... (changed or truncated)"
                ), None
    return None, verified




def _verify_params(path: str, manifest: dict):
    """(why the weights file is unusable or None, its arrays) for a checked manifest."""
    if manifest["params"] is None:
        return None, None
    name = _params.PARAMS_NAME
    file = os.path.join(path, name)
    if os.path.islink(file):
        return f"params file {name!r} is a symbolic link", None
    if not os.path.isfile(file):
        return f"params file {name!r} is missing", None
    arrays, reason = _params.read_params(file, manifest["params"])
    return reason, arrays


def load_artifact(path, expected: dict | None = None) -> Artifact:
    """A user-given artifact directory, verified (see `artifact_problem`).

    Raises:
      BackendError (a ValueError) naming the directory and what is wrong with it.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise BackendError(f"artifact {path!r} is not a directory")
    reason, manifest, library, arrays = _check(path, expected, snapshot=True)
    if reason:
        raise BackendError(f"artifact {path}: {reason}")
    return Artifact(os.path.abspath(path), manifest, library, arrays)


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
    reason, manifest, library, arrays = _check(final, expected, snapshot=True)
    if reason is None:
        return Artifact(os.path.abspath(final), manifest, library, arrays)
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

