"""Loading an artifact: nothing runs before its hashes match its manifest.

An artifact is a directory:

    lib.so          the host library (for CUDA targets it also carries the device code)
    params.bin      the weights: `main`'s trailing parameters (compile/params.py); absent
                    when the model has no large constants
    manifest.json   format, spec, inputs/outputs, exact target, versions, hashes, ...
                    (compile/manifest.py)

A library is machine code: `Artifact.load_module` loads it only after its sha256 matches
the manifest; `Artifact.load_params` likewise checks the weights' digest. The bytes
hashed are the bytes loaded (`VerifiedLibrary`: a sealed private snapshot), so a file
swapped after the check cannot be the one that runs.

Here: that snapshot, `Artifact`, and the checks of a whole directory (`artifact_problem`,
`verify_artifact`, `load_artifact`). What a failed check means is the caller's: in our
cache "rebuild" (compile/artifact.py warns and rebuilds), for a directory the user hands
us a BackendError that says why (`load_artifact`).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import tempfile
import weakref

from ..graph.errors import BackendError
from . import params as _params
from .manifest import read_manifest


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
        reason, library = _verify_library(self.path, self.manifest, snapshot=True)
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
    """The sha256 of the file at `path`, read in 1 MiB chunks (the manifest's
    `library_sha256`; a check that keeps no copy of the bytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_problem(path: str, expected: dict | None = None) -> str | None:
    """Why the artifact at `path` cannot be used, or None when it can.

    Checks: the manifest (`manifest.read_manifest`: our format, the keys the runtime
    reads, the TVM version against the installed one, every key of `expected`, e.g.
    target, model_sha256, cache_key), the library: a plain file (no path, no symbolic
    link) inside `path` whose sha256 is the manifest's, and likewise the weights file and
    its digest. Keeps nothing it read.
    """
    return _check(path, expected, snapshot=False)[0]


def verify_artifact(path: str, expected: dict | None = None):
    """(the artifact in the directory `path`, None) once it passes `artifact_problem`'s
    checks, else (None, why not). The artifact keeps the library's snapshot and the
    weights read while checking them, so loading it reads and hashes nothing again."""
    reason, manifest, library, arrays = _check(path, expected, snapshot=True)
    if reason:
        return None, reason
    return Artifact(os.path.abspath(path), manifest, library, arrays), None


def load_artifact(path, expected: dict | None = None) -> Artifact:
    """A user-given artifact directory, verified (see `artifact_problem`).

    Raises:
      BackendError (a ValueError) naming the directory and what is wrong with it.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise BackendError(f"artifact {path!r} is not a directory")
    artifact, reason = verify_artifact(path, expected)
    if reason:
        raise BackendError(f"artifact {path}: {reason}")
    return artifact


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


def _verify_library(path: str, manifest: dict, snapshot: bool):
    """(why the library of `manifest` in `path` is unusable or None; with `snapshot`, the
    `VerifiedLibrary` read while hashing it, else None)."""
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
