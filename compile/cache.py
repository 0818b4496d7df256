"""The content-addressed artifact cache: where it lives, its keys, its locks.

A cached library is machine code that the user's process will load, so the cache
directory must be the user's own: created 0700, and refused when group or others can
write to it (anyone who can plant a lib.so there could run code as the user). Artifacts
appear atomically (built in a temporary directory inside the cache, then renamed into
place), and one lock file per key makes concurrent builders of the same key wait for the
first instead of duplicating the work.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from importlib import metadata
from pathlib import Path

from ..graph.errors import ArgumentError

ENV_CACHE_DIR = "CONV1D_TRANSPOSE_CACHE_DIR"
APP_NAME = "conv1d-transpose"

# Bump when the artifact layout or manifest changes meaning.
ARTIFACT_FORMAT = "conv1d-transpose-artifact/2"  # 2: weights in params.bin


def default_cache_dir() -> str:
    """$CONV1D_TRANSPOSE_CACHE_DIR, else $XDG_CACHE_HOME/conv1d-transpose, else
    ~/.cache/conv1d-transpose."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), APP_NAME)


def open_cache_dir(path=None) -> str:
    """The cache directory (created 0700 if missing), checked to be private to this user.

    Raises:
      ArgumentError (a ValueError): the directory is writable by group or others, is owned
      by another user, or is not a directory.
    """
    path = os.path.abspath(os.fspath(path)) if path is not None else default_cache_dir()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as error:
        raise ArgumentError(f"cache_dir={path!r} cannot be created: {error}") from None
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ArgumentError(f"cache_dir={path!r} is not a directory")
    if info.st_uid != os.getuid():
        raise ArgumentError(f"cache_dir={path!r} is owned by uid {info.st_uid}, not by this "
                            f"user (uid {os.getuid()}); compiled libraries from it would run "
                            f"as you. Use a directory of your own.")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ArgumentError(
            f"cache_dir={path!r} has mode {stat.S_IMODE(info.st_mode):04o}: writable by group "
            f"or others, who could plant a library that would run as you. "
            f"Fix with: chmod 700 {path}")
    return path


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Versions of what produces the code, read without importing TVM."""
    def version(distribution):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "not-installed"

    return {"tvm": version("apache-tvm"), "tvm_ffi": version("apache-tvm-ffi"),
            "package": version(APP_NAME), "compiler": compiler_version()}


def compiler_version() -> str:
    """The lowering's (KERNEL_)VERSION, if declared, + a hash of compile/'s own files.

    Hashing compile/ (legalize, import, lowering, kernels, tuning records, build) means an
    edited kernel or pass never reuses a library built by the previous code, even when
    nobody remembers to bump a version string.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    texts = {}
    for source in sorted(root.rglob("*")):
        relative = source.relative_to(root)
        if not source.is_file() or any(part.startswith((".", "__pycache__"))
                                       for part in relative.parts) or source.suffix == ".pyc":
            continue
        data = source.read_bytes()
        texts[relative.as_posix()] = data
        digest.update(str(relative).encode() + b"\0")
        digest.update(data + b"\0")
    # Read from the sources, not by importing lowering (and the kernels, tuning, ...):
    # that import was ~20 ms of a ~60 ms cache hit in a fresh process (hifigan-up1).
    declared = _declared(texts.get("lowering.py"), "VERSION") or \
        _declared(texts.get("lowering.py"), "KERNEL_VERSION") or \
        _declared(texts.get("kernels/__init__.py"), "KERNEL_VERSION")
    return f"{declared or 'unversioned'}+{digest.hexdigest()[:16]}"


def _declared(source: bytes | None, name: str) -> str | None:
    """The string literal assigned to `name` at the top level of `source`, or None."""
    found = re.search(rb"^" + name.encode() + rb"\s*=\s*[\"']([^\"'\n]+)[\"']\s*$",
                      source or b"", re.MULTILINE)
    return found.group(1).decode() if found else None


@functools.lru_cache(maxsize=1)
def exporter_version() -> str:
    """The package and onnx versions + a hash of graph/'s own files: what, besides its
    arguments, decides the bytes of a model the package exports (see
    `model_source.ModelSource`)."""
    from .. import graph

    root = Path(graph.__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(root.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    onnx_version = version_of("onnx")
    return f"{version_of(APP_NAME)}+onnx-{onnx_version}+{digest.hexdigest()[:16]}"


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not-installed"


_ALIASES = "aliases"
_HEX = frozenset("0123456789abcdef")


def read_alias(cache_dir: str, recipe: str) -> str | None:
    """The model sha256 recorded for `recipe` (see `model_source.ModelSource`), or None."""
    try:
        with open(os.path.join(cache_dir, _ALIASES, recipe), encoding="ascii") as file:
            text = file.read(65)
    except (OSError, ValueError):
        return None
    return text if len(text) == 64 and set(text) <= _HEX else None


def write_alias(cache_dir: str, recipe: str, model_sha256: str) -> None:
    """Record that `recipe` makes the model `model_sha256`, atomically; best effort (a
    cache we cannot write to still serves hits, it only makes the next one slower)."""
    directory = os.path.join(cache_dir, _ALIASES)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(model_sha256)
            os.replace(temp, os.path.join(directory, recipe))
        except BaseException:
            os.unlink(temp)
            raise
    except OSError:
        pass


def cache_key(model_sha256: str, target: dict, options: dict) -> str:
    """sha256 over everything that changes the code produced."""
    material = {"format": ARTIFACT_FORMAT, "model_sha256": model_sha256, "target": target,
                "versions": versions(), "options": options}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def key_lock(cache_dir: str, key: str):
    """Exclusive lock for building `key`: a second builder waits for the first."""
    fd = os.open(os.path.join(cache_dir, f".{key}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def make_temp_dir(parent: str, key: str | None = None) -> str:
    """An empty 0700 directory inside `parent` to build into (same filesystem: rename works).

    With `key`, its name starts with `.tmp-<key>-`, so that a later builder of the same
    key, holding `key_lock`, can remove what a crashed builder left (`clean_stale`).
    """
    return tempfile.mkdtemp(dir=parent, prefix=f".tmp-{key}-" if key else ".tmp-")


def clean_stale(cache_dir: str, key: str) -> list[str]:
    """Remove the temporary and trash directories a crashed builder of `key` left behind.

    Call only while holding `key_lock(cache_dir, key)`: nobody else can be using them then.
    Returns the names removed.
    """
    removed = []
    for prefix in (f".tmp-{key}-", f".trash-{key}-"):
        for name in os.listdir(cache_dir):
            path = os.path.join(cache_dir, name)
            if name.startswith(prefix) and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
    return removed


def publish(temp_dir: str, final_dir: str) -> bool:
    """Rename `temp_dir` to `final_dir`. False (and `temp_dir` removed) if another process
    already put a directory there."""
    try:
        os.rename(temp_dir, final_dir)
        return True
    except OSError:
        if not os.path.isdir(final_dir):
            raise
        shutil.rmtree(temp_dir, ignore_errors=True)
        return False


def move_aside(path: str) -> str | None:
    """Rename `path` into a new `.trash-<name>-*` directory beside it (one rename: no reader
    sees it half-deleted, and a crash leaves it whole); returns that directory, or None when
    there was nothing at `path`. Remove it with `shutil.rmtree` once its replacement is in
    place."""
    if not os.path.lexists(path):
        return None
    trash = tempfile.mkdtemp(dir=os.path.dirname(path),
                             prefix=f".trash-{os.path.basename(path)}-")
    try:
        os.rename(path, os.path.join(trash, "old"))
    except BaseException:
        os.rmdir(trash)
        raise
    return trash


def discard(path: str) -> None:
    """Remove a directory by renaming it aside first, so no reader sees it half-deleted."""
    trash = move_aside(path)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
