"""Faults and security (issue 8): every injected fault ends in a correct result (a rebuild,
or a fallback with a warning) or a clear ValueError-style error; none loads a bad
artifact, leaves a torn file where a reader looks, or loses a good artifact.

Faults: a missing library, a missing or garbled manifest, an unwritable cache directory,
a full disk while writing the library or the manifest, a crash between the temporary
write and the rename, eight processes building one key, a missing or broken nvcc, a
missing or broken cross compiler, TVM not importable, onnxruntime not importable.
Security: the private cache directory, planted artifacts, libraries outside the artifact,
check-then-swap, and a scan of the sources for unsafe loaders and shells.
Sizes: requests too big for memory are refused before anything is built or allocated.
(Truncated/flipped libraries, foreign TVM versions and targets, two builders and a
group-writable cache are in tests/test_compile_artifacts.py.)
"""
import ast
import errno
import hashlib
import json
import multiprocessing
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import onnx
import pytest
from models import edit_manifest, small_model

import conv1d_transpose as ct
import conv1d_transpose.compile.artifact as artifact_module
import conv1d_transpose.compile.build as build_module
import conv1d_transpose.compile.loader as loader_module
import conv1d_transpose.compile.manifest as manifest_module
from conv1d_transpose.compile import cache as cache_module
from conv1d_transpose.compile.artifact import ArtifactWarning, compile_model
from conv1d_transpose.compile.cache import open_cache_dir
from conv1d_transpose.compile.loader import load_artifact
from conv1d_transpose.compile.manifest import MANIFEST_NAME
from conv1d_transpose.compile.targets import load_targets
from conv1d_transpose.graph import max_error
from conv1d_transpose.graph.errors import ArgumentError, BackendError, ShapeError
from conv1d_transpose.runtime import BackendFallbackWarning
from conv1d_transpose.runtime.tvm_backend import TVMSession

ROOT = pathlib.Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 65534  # nobody


def sha256(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def leftovers(directory):
    """Names in a cache directory other than artifacts and lock files."""
    return sorted(name for name in os.listdir(directory)
                  if name.startswith(".") and not name.endswith(".lock"))


def check_session(model, spec, filters, cache_dir):
    x = np.random.default_rng(5).standard_normal(spec.input_shape).astype(np.float32)
    got, = TVMSession(model, "host", cache_dir=cache_dir).run(None, {"input": x})
    assert max_error(got, x, filters, spec)[1]


@pytest.fixture
def loaded(monkeypatch):
    """sha256 of every library TVM loads (a list): the runtime's one loader, and TVM's
    public one in case anything called that instead."""
    import tvm

    hashes = []

    def recorder(real):
        def recording(path, *args, **kwargs):
            hashes.append(sha256(path))
            return real(path, *args, **kwargs)
        return recording

    monkeypatch.setattr(tvm.runtime, "load_module", recorder(tvm.runtime.load_module))
    monkeypatch.setattr(loader_module, "_load_module", recorder(loader_module._load_module))
    return hashes


def run_python(code, *, timeout=180):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# -- a missing library, a missing or garbled manifest ---------------------------------------

def test_missing_library_is_rebuilt_in_cache_and_refused_from_user(cache_dir, tmp_path,
                                                                   count_builds, loaded):
    spec, filters, model = small_model()
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    os.remove(artifact.library_path)
    with pytest.warns(ArtifactWarning, match=r"library 'lib.so' is missing"):
        again = compile_model(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host", "host"] and again.path == artifact.path
    check_session(model, spec, filters, cache_dir)
    assert loaded == [again.manifest["library_sha256"]]

    out = tmp_path / "artifact"
    compile_model(model, "host", cache_dir=cache_dir, out_dir=out)
    os.remove(out / "lib.so")
    with pytest.raises(BackendError, match=r"library 'lib.so' is missing"):
        TVMSession(str(out), "host")
    assert len(loaded) == 1


def _no_manifest(path):
    os.remove(os.path.join(path, MANIFEST_NAME))


def _rewrite(function):
    def damage(path):
        manifest_path = os.path.join(path, MANIFEST_NAME)
        with open(manifest_path, encoding="utf-8") as file:
            text = file.read()
        with open(manifest_path, "w", encoding="utf-8") as file:
            file.write(function(text))
    damage.__name__ = function.__name__
    return damage


def _edit(**changes):
    def edit(text):
        manifest = json.loads(text)
        for key, value in changes.items():
            if value is None:
                del manifest[key]
            else:
                manifest[key] = value
        return json.dumps(manifest)
    edit.__name__ = "edit_" + "_".join(changes)
    return edit


def _symlinked_library(path):
    real = os.path.join(os.path.dirname(path), "elsewhere.so")
    shutil.move(os.path.join(path, "lib.so"), real)
    os.symlink(real, os.path.join(path, "lib.so"))


MANIFEST_DAMAGE = {
    "missing": (_no_manifest, "no manifest.json"),
    "empty": (_rewrite(lambda text: ""), "unreadable"),
    "truncated": (_rewrite(lambda text: text[:len(text) // 2]), "unreadable"),
    "binary": (_rewrite(lambda text: "\x00\xff" * 10), "unreadable"),
    "a list": (_rewrite(lambda text: "[1, 2]"), "format"),
    "no inputs": (_rewrite(_edit(inputs=None)), "manifest inputs is None"),
    "library not a string": (_rewrite(_edit(library=["lib.so"])), "manifest library"),
    "library outside": (_rewrite(_edit(library="../lib.so")), "not a file name inside"),
    "library symlink": (_symlinked_library, "symbolic link"),
}


@pytest.mark.parametrize("damage", MANIFEST_DAMAGE)
def test_missing_or_garbled_manifest(cache_dir, tmp_path, count_builds, loaded, damage):
    function, reason = MANIFEST_DAMAGE[damage]
    spec, filters, model = small_model()
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    function(artifact.path)
    with pytest.warns(ArtifactWarning, match=reason):
        again = compile_model(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host", "host"] and load_artifact(again.path)
    check_session(model, spec, filters, cache_dir)

    out = tmp_path / "artifact"
    compile_model(model, "host", cache_dir=cache_dir, out_dir=out)
    function(str(out))
    with pytest.raises(BackendError, match=reason):
        TVMSession(str(out), "host")
    assert loaded == [again.manifest["library_sha256"]]  # only the rebuilt one ran


# -- an unwritable cache directory ------------------------------------------------------------

def _inside(path, directory):
    return os.fspath(path).startswith(os.fspath(directory) + os.sep)


@pytest.mark.parametrize("where", ("lock file", "temporary directory", "rename"))
def test_unwritable_cache_dir_is_a_clear_error(cache_dir, monkeypatch, where):
    spec, filters, model = small_model()
    good = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir)
    good_hash = sha256(good.library_path)

    def denied(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    with monkeypatch.context() as patch:
        if where == "lock file":
            real_open = os.open
            patch.setattr(os, "open", lambda path, *a, **k: denied(path)
                          if _inside(path, cache_dir) else real_open(path, *a, **k))
        elif where == "temporary directory":
            real_mkdtemp = cache_module.tempfile.mkdtemp
            patch.setattr(cache_module.tempfile, "mkdtemp", lambda *a, dir=None, **k:
                          denied(dir) if dir == cache_dir else real_mkdtemp(*a, dir=dir, **k))
        else:
            real_rename = os.rename
            patch.setattr(os, "rename", lambda source, target: denied(target)
                          if _inside(target, cache_dir) else real_rename(source, target))
        with pytest.raises(BackendError, match=r"cannot build into cache_dir=.*Permission denied"):
            compile_model(model, "host", cache_dir=cache_dir)
        assert leftovers(cache_dir) == []
        assert compile_model(small_model(out_width=10)[2], "host",
                             cache_dir=cache_dir).path == good.path  # a hit needs no write
        assert sha256(good.library_path) == good_hash
        # backend='auto' falls back with a warning that names the reason.
        with pytest.warns(BackendFallbackWarning, match="Permission denied"):
            op = ct.Conv1DTranspose(filters, spec.output_shape, 2, cache_dir=cache_dir)
        assert op.backend == "onnxruntime:cpu"
    check_session(model, spec, filters, cache_dir)


def _without_dac_override():
    """In the child, before exec: drop the capabilities that let root ignore file modes
    (CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2) from the bounding set, so the exec'ed
    process, still uid 0, is bound by permission bits like any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # 24: PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_read_only_cache_dir_for_real(tmp_path):
    """chmod 0o500, with permissions that apply (as root: without CAP_DAC_OVERRIDE): cached
    artifacts are still served, a new build is a clear error, 'auto' falls back."""
    code = f"""
        import json, os, warnings
        import numpy as np
        import conv1d_transpose as ct
        from conv1d_transpose.compile.artifact import compile_model
        from conv1d_transpose.graph import build_model, make_spec
        cache = {str(tmp_path / "cache")!r}
        def model(width):
            spec = make_spec(None, (3, 4, 2), (1, width, 4), 2, "SAME")
            return build_model(spec, np.ones((3, 4, 2), np.float32))
        first = compile_model(model(9), "host", cache_dir=cache).path
        os.chmod(cache, 0o500)
        out = {{"hit": compile_model(model(9), "host", cache_dir=cache).path == first}}
        try:
            open(os.path.join(cache, "probe"), "w")
            out["bypass"] = True
        except PermissionError:
            out["bypass"] = False
        try:
            compile_model(model(10), "host", cache_dir=cache)
        except ValueError as error:
            out["error"] = type(error).__name__ + ": " + str(error)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            op = ct.Conv1DTranspose(np.ones((3, 4, 2), np.float32), [1, 10, 4], 2,
                                    cache_dir=cache)
        out["backend"] = op.backend
        out["warnings"] = [str(w.message) for w in caught]
        out["entries"] = sorted(os.listdir(cache))
        os.chmod(cache, 0o700)
        print(json.dumps(out))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            capture_output=True, text=True, timeout=180,
                            preexec_fn=_without_dac_override if IS_ROOT else None)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert not out["bypass"], "the child could still write to a 0o500 directory"
    assert out["hit"]
    assert out["error"].startswith("BackendError: cannot build into cache_dir=")
    assert "Permission denied" in out["error"]
    assert out["backend"] == "onnxruntime:cpu"
    assert len(out["warnings"]) == 1 and "Permission denied" in out["warnings"][0]
    assert "\n" not in out["warnings"][0]
    assert not [name for name in out["entries"] if name.startswith((".tmp", ".trash"))]


# -- a full disk -------------------------------------------------------------------------------

def _no_space(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _full_disk_in_export(monkeypatch):
    def export(result, directory):
        with open(os.path.join(directory, "lib.so"), "wb") as file:
            file.write(b"\x7fELF" + b"\0" * 1000)  # a torn library, then the disk is full
        raise _no_space(os.path.join(directory, "lib.so"))

    monkeypatch.setattr(build_module, "export_library", export)


class _FullFile:
    def __init__(self, file):
        self._file, self._written = file, 0

    def write(self, text):
        if self._written + len(text) > 100:
            raise _no_space(self._file.name)
        self._written += len(text)
        return self._file.write(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def _full_disk_in_manifest(monkeypatch):
    def fake_open(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        if os.path.basename(path) == MANIFEST_NAME and "w" in mode:
            return _FullFile(file)
        return file

    monkeypatch.setattr(manifest_module, "open", fake_open, raising=False)


@pytest.mark.parametrize("inject", (_full_disk_in_export, _full_disk_in_manifest),
                         ids=("library", "manifest"))
def test_full_disk_during_write(cache_dir, monkeypatch, count_builds, inject):
    spec, filters, model = small_model()
    other = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir)
    other_hash = sha256(other.library_path)
    with monkeypatch.context() as patch:
        inject(patch)
        with pytest.raises(BackendError, match=r"cannot build into cache_dir=.*No space left"):
            compile_model(model, "host", cache_dir=cache_dir)
    assert leftovers(cache_dir) == []  # nothing torn left behind
    assert sorted(n for n in os.listdir(cache_dir) if not n.startswith(".")) == [
        os.path.basename(other.path)]  # nothing published, the good one kept
    assert sha256(other.library_path) == other_hash and load_artifact(other.path)
    check_session(model, spec, filters, cache_dir)  # the space is back: it builds


def test_full_disk_while_exporting_keeps_the_old_out_dir(cache_dir, tmp_path, monkeypatch):
    out = tmp_path / "artifact"
    old = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir, out_dir=out)
    old_hash = sha256(old.library_path)
    real_copy = shutil.copy2

    def copy2(source, target, **kwargs):
        if os.path.basename(target) == MANIFEST_NAME:
            raise _no_space(target)
        return real_copy(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copy2", copy2)
    with pytest.raises(BackendError, match=r"cannot write out_dir=.*No space left"):
        compile_model(small_model()[2], "host", cache_dir=cache_dir, out_dir=out)
    assert sha256(out / "lib.so") == old_hash and load_artifact(out).manifest == old.manifest
    assert sorted(os.listdir(tmp_path)) == ["artifact", "cache"]


# -- a crash between the temporary write and the rename ---------------------------------------

CRASH_CHILD = """
    import json, os, sys
    import onnx
    import conv1d_transpose.compile.cache as cache
    from conv1d_transpose.compile.artifact import compile_model
    point, cache_dir, model_path, out_dir, versions = sys.argv[1:6]
    cache.versions = lambda: json.loads(versions)  # the parent's key, whatever edits compile/
    real = getattr(cache, point)
    def crash(*args):
        if point == "move_aside":
            real(*args)  # the old out_dir moved aside, the new one not yet renamed in
        os._exit(17)  # no cleanup, no finally: as if killed
    setattr(cache, point, crash)
    compile_model(onnx.load(model_path), "host", cache_dir=cache_dir,
                  out_dir=out_dir if out_dir != "-" else None)
"""


def _crash_child(point, cache_dir, model, tmp_path, out_dir="-"):
    model_path = tmp_path / "model.onnx"
    onnx.save(model, model_path)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_CHILD), point,
                             cache_dir, str(model_path), str(out_dir),
                             json.dumps(cache_module.versions())],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 17, result.stderr[-3000:]


def test_crash_before_publish_loses_nothing_and_next_build_recovers(cache_dir, tmp_path,
                                                                    count_builds):
    spec, filters, model = small_model()
    _, _, other_model = small_model(out_width=10)
    good = compile_model(other_model, "host", cache_dir=cache_dir)
    good_hash = sha256(good.library_path)
    _crash_child("publish", cache_dir, model, tmp_path)
    stale = leftovers(cache_dir)
    assert len(stale) == 1 and stale[0].startswith(".tmp-")  # complete, never renamed
    assert sorted(os.listdir(os.path.join(cache_dir, stale[0]))) == ["lib.so", MANIFEST_NAME]
    assert sorted(n for n in os.listdir(cache_dir) if not n.startswith(".")) == [
        os.path.basename(good.path)]
    # The good artifact is untouched and still a hit; the next build of the crashed key
    # rebuilds and removes what the crashed builder left.
    assert compile_model(other_model, "host", cache_dir=cache_dir).path == good.path
    assert sha256(good.library_path) == good_hash and count_builds == ["host"]
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host", "host"] and leftovers(cache_dir) == []
    assert load_artifact(artifact.path)
    check_session(model, spec, filters, cache_dir)


def test_crash_while_discarding_a_damaged_artifact(cache_dir, tmp_path, count_builds):
    spec, filters, model = small_model()
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    key = os.path.basename(artifact.path)
    with open(artifact.library_path, "r+b") as file:
        file.truncate(100)
    with pytest.warns(ArtifactWarning, match="sha256"):  # the child's warning, in the parent
        artifact_module._cached(artifact.path, {}, warn=True)
    # The child moves the damaged artifact aside, then dies before deleting it.
    _crash_child("move_aside", cache_dir, model, tmp_path)
    assert [name.startswith(f".trash-{key}-") for name in leftovers(cache_dir)] == [True]
    assert not os.path.exists(artifact.path)
    again = compile_model(model, "host", cache_dir=cache_dir)
    assert again.path == artifact.path and leftovers(cache_dir) == []
    assert count_builds == ["host", "host"]
    check_session(model, spec, filters, cache_dir)


def test_crash_while_replacing_out_dir_keeps_the_old_artifact_whole(cache_dir, tmp_path):
    out = tmp_path / "artifact"
    old = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir, out_dir=out)
    old_hash = sha256(old.library_path)
    spec, filters, model = small_model()
    compile_model(model, "host", cache_dir=cache_dir)  # so the child only copies
    _crash_child("move_aside", cache_dir, model, tmp_path, out_dir=out)
    trash = [name for name in os.listdir(tmp_path) if name.startswith(".trash-artifact-")]
    assert len(trash) == 1 and not out.exists()
    kept = tmp_path / trash[0] / "old"
    assert sha256(kept / "lib.so") == old_hash and load_artifact(kept).manifest == old.manifest
    new = compile_model(model, "host", cache_dir=cache_dir, out_dir=out)
    assert new.path == str(out) and load_artifact(out)


# -- eight processes building one key ----------------------------------------------------------

def _build_in_child(model_bytes, cache_dir, barrier, results, versions):
    import conv1d_transpose.compile.build as child_build
    import conv1d_transpose.compile.cache as child_cache
    from conv1d_transpose.compile.artifact import compile_model as child_compile

    # One key for all, even if someone edits compile/ (hashed into the key) meanwhile.
    child_cache.versions = lambda: versions

    built = []
    real = child_build.build
    child_build.build = lambda mod, entry: built.append(1) or real(mod, entry)
    model = onnx.load_from_string(model_bytes)
    barrier.wait(timeout=120)
    artifact = child_compile(model, "host", cache_dir=cache_dir)
    results.put((artifact.path, artifact.manifest["library_sha256"], len(built)))


def test_eight_processes_building_one_key_make_one_artifact(cache_dir):
    spec, filters, model = small_model(out_width=10, seed=8)
    # A fork server imports TVM once and forks the eight builders from it (spawning eight
    # fresh interpreters costs 8 TVM imports: ~25 s of CPU on a small machine).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tvm", "tvm.relax", "conv1d_transpose.compile.artifact",
                                    "conv1d_transpose.compile.lowering"])
    barrier = context.Barrier(8)
    results = context.Queue()
    children = [context.Process(target=_build_in_child,
                                args=(model.SerializeToString(), cache_dir, barrier, results,
                                      cache_module.versions()))
                for _ in range(8)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=240) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert len({(path, digest) for path, digest, _ in outcomes}) == 1
    assert sum(built for _, _, built in outcomes) == 1  # one build; seven waited, then hit
    assert leftovers(cache_dir) == []
    path = outcomes[0][0]
    assert [n for n in os.listdir(cache_dir) if not n.startswith(".")] == [
        os.path.basename(path)]
    assert sha256(os.path.join(path, "lib.so")) == outcomes[0][1]
    check_session(model, spec, filters, cache_dir)


# -- missing or broken compilers -----------------------------------------------------------------

def _without(monkeypatch, *names):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k:
                        None if name in names else real(name, *a, **k))


def _fake_tool(tmp_path, monkeypatch, name):
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    path = tools / name
    path.write_text(f"#!/bin/sh\necho '{name}: fatal error: simulated failure' >&2\nexit 1\n")
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")


def test_missing_nvcc_builds_cuda_source_only(cache_dir, monkeypatch):
    _without(monkeypatch, "nvcc")
    entry = load_targets()["cuda-sm90"]
    capabilities = entry.capabilities()
    assert capabilities.can_build and "nvcc not found" in capabilities.build_reason
    artifact = compile_model(small_model()[2], "cuda-sm90", cache_dir=cache_dir)
    assert artifact.manifest["device_code"]["format"] == "cuda-source"
    assert artifact.manifest["options"]["cuda_device_code"] == "source"
    assert "nvcc" not in artifact.manifest["options"]
    with open(artifact.library_path, "rb") as file:
        assert b"__global__" in file.read()  # the GPU machine's TVM compiles it on load


def test_broken_nvcc_is_a_clear_error(cache_dir, tmp_path, monkeypatch):
    _fake_tool(tmp_path, monkeypatch, "nvcc")
    with pytest.raises(BackendError, match=r"(?s)nvcc failed.*simulated failure"):
        compile_model(small_model()[2], "cuda-sm90", cache_dir=cache_dir)
    assert os.listdir(cache_dir) == [n for n in os.listdir(cache_dir) if n.endswith(".lock")]


def test_missing_cross_compiler_names_it_and_its_package(cache_dir, monkeypatch):
    _without(monkeypatch, "aarch64-linux-gnu-gcc")
    assert not load_targets()["arm64"].capabilities().can_build
    with pytest.raises(BackendError, match=r"target 'arm64'.*aarch64-linux-gnu-gcc not found"
                                           r".*apt-get install gcc-aarch64-linux-gnu"):
        compile_model(small_model()[2], "arm64", cache_dir=cache_dir)
    assert os.listdir(cache_dir) == []


def test_broken_cross_compiler_is_a_clear_error(cache_dir, tmp_path, monkeypatch):
    _fake_tool(tmp_path, monkeypatch, "aarch64-linux-gnu-gcc")
    with pytest.raises(BackendError, match=r"linking lib.so with aarch64-linux-gnu-gcc failed"):
        compile_model(small_model()[2], "arm64", cache_dir=cache_dir)
    assert leftovers(cache_dir) == []
    assert not [n for n in os.listdir(cache_dir) if not n.startswith(".")]


# -- TVM or onnxruntime not importable ----------------------------------------------------------

BACKENDS_CHILD = """
    import json, sys, warnings
    sys.modules[{module!r}] = None  # `import {module}` raises ImportError from here on
    import numpy as np
    import conv1d_transpose as ct
    from conv1d_transpose.runtime import BackendFallbackWarning
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 4, 2)).astype(np.float32)
    x = rng.standard_normal((1, 5, 2)).astype(np.float32)
    spec = ct.graph.make_spec(None, f.shape, [1, 9, 4], 2)
    out = {{}}
    for backend in ("auto", "tvm", "onnxruntime"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                op = ct.Conv1DTranspose(f, [1, 9, 4], 2, backend=backend)
                ok = bool(ct.graph.max_error(op(x), x, f, spec)[1])
                out[backend] = {{"backend": op.backend, "ok": ok}}
            except Exception as error:
                out[backend] = {{"error": [c.__name__ for c in type(error).__mro__],
                                "message": str(error)}}
        out[backend]["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
    out["imported"] = sorted(m for m in ("tvm", "onnxruntime") if sys.modules.get(m))
    print(json.dumps(out))
"""


def _without_module(module):
    result = run_python(BACKENDS_CHILD.format(module=module))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tvm_not_importable():
    out = _without_module("tvm")
    auto = out["auto"]
    assert auto["backend"] == "onnxruntime:cpu" and auto["ok"]
    [[category, message]] = auto["warnings"]
    assert category == "BackendFallbackWarning" and "\n" not in message
    assert "instead of tvm:host: TVM is not importable" in message
    assert "BackendError" in out["tvm"]["error"] and "ValueError" in out["tvm"]["error"]
    assert out["tvm"]["message"].startswith("TVM is not importable")
    assert out["onnxruntime"]["backend"] == "onnxruntime:cpu" and out["onnxruntime"]["ok"]
    assert out["imported"] == ["onnxruntime"]


def test_tvm_not_importable_artifact_directory(cache_dir, tmp_path):
    out = tmp_path / "artifact"
    compile_model(small_model()[2], "host", cache_dir=cache_dir, out_dir=out)
    result = run_python(f"""
        import sys
        sys.modules["tvm"] = None
        import conv1d_transpose as ct
        try:
            ct.InferenceSession({str(out)!r}, backend="tvm")
        except ct.BackendError as error:
            print("BackendError:", error)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("BackendError: TVM is not importable")


def test_onnxruntime_not_importable():
    out = _without_module("onnxruntime")
    error = out["onnxruntime"]
    assert "BackendError" in error["error"] and "ValueError" in error["error"]
    assert error["message"].startswith("onnxruntime is not importable")
    # This model has a scheduled TVM kernel: 'auto' takes TVM and needs no onnxruntime.
    assert out["auto"]["backend"] == "tvm:host" and out["auto"]["ok"]
    assert out["auto"]["warnings"] == []
    assert out["tvm"]["backend"] == "tvm:host" and out["tvm"]["ok"]
    assert out["imported"] == ["tvm"]


# -- security: the cache directory ------------------------------------------------------------

@pytest.mark.parametrize("umask", (0o000, 0o022, 0o077))
def test_cache_dir_is_created_0700_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = open_cache_dir(tmp_path / "new" / "cache")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    artifact = compile_model(small_model()[2], "host", cache_dir=path)
    assert stat.S_IMODE(os.stat(artifact.path).st_mode) == 0o700


@pytest.mark.parametrize("mode", (0o777, 0o1777, 0o775))
def test_symlinked_cache_dir_to_a_place_others_can_write_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    link = tmp_path / "cache-link"
    link.symlink_to(shared)
    with pytest.raises(ArgumentError, match=r"writable by group or others"):
        compile_model(small_model()[2], "host", cache_dir=link)
    assert os.listdir(shared) == []


def test_symlinked_cache_dir_to_a_private_place_is_used(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    link = tmp_path / "cache-link"
    link.symlink_to(private)
    artifact = compile_model(small_model()[2], "host", cache_dir=link)
    assert os.path.realpath(artifact.path).startswith(str(private))


@pytest.mark.skipif(not IS_ROOT, reason="making a directory owned by another user needs root")
def test_cache_dir_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(ArgumentError, match=rf"owned by uid {OTHER_UID}"):
        compile_model(small_model()[2], "host", cache_dir=path)
    assert os.listdir(path) == []


# -- security: what is loaded -------------------------------------------------------------------

def test_artifact_planted_under_another_key(cache_dir, count_builds, loaded):
    """A consistent artifact (library hash = manifest) for model A, planted where model B's
    key lives, is refused while its manifest says A (model_sha256, then cache_key). One
    whose manifest is rewritten to say B in every checked field is accepted: the hash
    proves integrity, not origin, which is why the cache directory must be private."""
    spec, filters, model = small_model()
    a = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir)
    b = compile_model(model, "host", cache_dir=cache_dir)
    b_manifest = dict(b.manifest)

    def plant(**changes):
        shutil.rmtree(b.path)
        shutil.copytree(a.path, b.path)
        edit_manifest(b.path, **changes)

    plant()
    with pytest.warns(ArtifactWarning, match="manifest model_sha256"):
        compile_model(model, "host", cache_dir=cache_dir)
    plant(model_sha256=b_manifest["model_sha256"])
    with pytest.warns(ArtifactWarning, match="manifest cache_key"):
        compile_model(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host", "host", "host", "host"]
    check_session(model, spec, filters, cache_dir)
    assert loaded == [b_manifest["library_sha256"]]
    # The limit: a plant that says B everywhere is indistinguishable from B's own build.
    plant(cache_key=b_manifest["cache_key"], model_sha256=b_manifest["model_sha256"])
    assert compile_model(model, "host", cache_dir=cache_dir).manifest["library_sha256"] == \
        a.manifest["library_sha256"]


def test_user_artifact_with_a_planted_library_and_edited_hash(cache_dir, tmp_path, loaded):
    """A user-given directory is trusted as code: whoever can write it can make the hash
    match. load_artifact checks format, TVM version, target and the hash -- not origin."""
    out = tmp_path / "artifact"
    compile_model(small_model()[2], "host", cache_dir=cache_dir, out_dir=out)
    planted = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir)
    shutil.copy(planted.library_path, out / "lib.so")
    with pytest.raises(BackendError, match="changed or truncated"):
        load_artifact(out)
    edit_manifest(out, library_sha256=planted.manifest["library_sha256"])
    assert load_artifact(out).manifest["library_sha256"] == planted.manifest["library_sha256"]


def test_library_path_outside_the_artifact_is_refused(cache_dir, tmp_path, loaded):
    out = tmp_path / "artifact"
    artifact = compile_model(small_model()[2], "host", cache_dir=cache_dir, out_dir=out)
    shutil.copy(out / "lib.so", tmp_path / "evil.so")  # same bytes, so the hash matches
    for library in ("../evil.so", str(tmp_path / "evil.so"), "sub/lib.so", ".", ""):
        edit_manifest(out, library=library)
        with pytest.raises(BackendError, match="library"):
            load_artifact(out)
    edit_manifest(out, library="lib.so")
    assert load_artifact(out).manifest == artifact.manifest
    assert loaded == []


def test_the_bytes_loaded_are_the_bytes_verified(cache_dir, monkeypatch, loaded):
    """The bytes hashed are the bytes loaded: a library rewritten in place after the check,
    or while TVM loads it, does not run (TVM loads a sealed private snapshot of the
    verified bytes); an artifact re-verified at load time refuses a changed file."""
    spec, filters, model = small_model()
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    good = artifact.manifest["library_sha256"]
    planted = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir)
    assert planted.manifest["library_sha256"] != good

    shutil.copy(planted.library_path, artifact.library_path)  # after the check: in place
    assert artifact.load_module() is not None
    assert loaded == [good]  # the verified bytes ran, not the rewritten file

    # Without a snapshot (an Artifact made by hand), the file is verified at load time.
    bare = loader_module.Artifact(artifact.path, artifact.manifest)
    with pytest.raises(BackendError, match="changed while being loaded"):
        bare.load_module()
    assert loaded == [good]

    with pytest.warns(ArtifactWarning, match="sha256"):
        artifact = compile_model(model, "host", cache_dir=cache_dir)  # the plant: rebuilt
    assert artifact.manifest["library_sha256"] == good
    real_load = loader_module._load_module  # the `loaded` fixture's

    def swap_while_loading(path, *args, **kwargs):
        shutil.copy(planted.library_path, artifact.library_path)  # too late to matter
        return real_load(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loader_module, "_load_module", swap_while_loading)
        assert artifact.load_module() is not None
    assert loaded == [good, good]
    assert sha256(artifact.library_path) == planted.manifest["library_sha256"]


def test_the_snapshot_cannot_be_changed(cache_dir):
    """The private copy TVM loads is sealed: not even this process can write, truncate or
    grow it once it has been hashed."""
    artifact = compile_model(small_model()[2], "host", cache_dir=cache_dir)
    library = artifact.library
    assert library is not None and library.sha256 == artifact.manifest["library_sha256"]
    if library._fd is None:
        pytest.skip("no memfd here: the snapshot is an immutable bytes object")
    with pytest.raises(PermissionError):
        os.pwrite(library._fd, b"\0", 0)
    with pytest.raises(PermissionError):
        os.ftruncate(library._fd, 1)
    with pytest.raises(PermissionError):
        os.ftruncate(library._fd, library.size + 1)
    assert hashlib.sha256(library.bytes()).hexdigest() == artifact.manifest["library_sha256"]


# -- security: the sources ---------------------------------------------------------------------

PACKAGE_DIRS = ("compile", "runtime", "graph", "conv1d_transpose")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve",
                  "jsonpickle", "joblib"}
UNSAFE_CALLS = {"os.system", "os.popen", "os.spawnl", "os.spawnlp", "os.execl", "eval",
                "exec", "yaml.load", "yaml.full_load", "yaml.unsafe_load", "yaml.load_all",
                "yaml.full_load_all", "yaml.unsafe_load_all", "commands.getoutput",
                "subprocess.getoutput", "subprocess.getstatusoutput"}
SUBPROCESS_CALLS = {"subprocess.run", "subprocess.Popen", "subprocess.call",
                    "subprocess.check_call", "subprocess.check_output"}


def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_text(node):
    return isinstance(node, (ast.JoinedStr, ast.BinOp)) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str))


def _problems(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func) or ""
            keywords = {k.arg: k.value for k in node.keywords}
            if name in UNSAFE_CALLS:
                found.append(f"{where}: {name}()")
            shell = keywords.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and
                                          shell.value is False):
                found.append(f"{where}: {name}(shell=...)")
            if name in SUBPROCESS_CALLS and node.args and _is_text(node.args[0]):
                found.append(f"{where}: {name}() with a command string, not an argument list")
            if name.endswith(("np.load", "numpy.load")) and "allow_pickle" in keywords:
                pickle = keywords["allow_pickle"]  # numpy's default is False
                if not (isinstance(pickle, ast.Constant) and pickle.value is False):
                    found.append(f"{where}: {name}() without allow_pickle=False")
            if name.endswith((".loads", ".load")) and name.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where}: {name}()")
    return found


def test_sources_use_safe_loaders_and_no_shell():
    files = [path for directory in PACKAGE_DIRS for path in sorted((ROOT / directory).rglob("*.py"))]
    assert len(files) > 20
    problems = [problem for path in files for problem in _problems(path)]
    assert problems == [], "\n".join(problems)
    text = "\n".join(path.read_text(encoding="utf-8") for path in files)
    assert "yaml.safe_load" in text  # the YAML files are read, and only this way


def test_the_scan_catches_what_it_forbids(tmp_path, monkeypatch):
    bad = ROOT / "compile" / "__scan_probe__.py"  # never written: parsed from memory
    source = textwrap.dedent("""
        import pickle, subprocess, os, yaml, numpy as np
        pickle.loads(b"")
        subprocess.run(f"gcc {path}", shell=True)
        subprocess.check_output("ls " + path)
        os.system("x")
        yaml.load(text)
        np.load(path, allow_pickle=True)
        eval("1")
    """)
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, **kwargs: source)
    problems = _problems(bad)
    for expected in ("import pickle", "pickle.loads()", "shell=", "command string",
                     "os.system()", "yaml.load()", "allow_pickle=False", "eval()"):
        assert any(expected in problem for problem in problems), (expected, problems)


# -- sizes ---------------------------------------------------------------------------------------

@pytest.fixture
def nothing_built(monkeypatch):
    import conv1d_transpose.op as op_module

    def must_not_build(*args, **kwargs):
        raise AssertionError("a session was opened for a request that must be refused")

    monkeypatch.setattr(op_module, "open_session", must_not_build)
    monkeypatch.setattr(build_module, "build", must_not_build)


def test_more_than_max_elements_is_refused_before_anything(nothing_built):
    f = np.ones((1, 1, 1), np.float32)
    huge_input = np.broadcast_to(np.float32(0), (1, 2**31, 1))  # a view: no memory
    wide = np.ones((1, 2**16, 1), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(ShapeError, match=r"elements; at most 2147483647 are allowed"):
            ct.Conv1DTranspose(f, [1, 2**31, 1], 1)
        with pytest.raises(ShapeError, match=r"elements; at most 2147483647"):
            ct.conv1d_transpose(huge_input, f, [1, 2**31, 1], 1)
        with pytest.raises(ShapeError, match=r"output_shape of shape .* elements"):
            ct.Conv1DTranspose(wide, [2**16, 1, 2**16], 1)  # 2**32 outputs from a 2**16 input
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak} bytes allocated while refusing"


def test_more_than_a_fraction_of_free_memory_is_refused(monkeypatch, nothing_built):
    import psutil

    # 64 MiB available; the request needs 1 x 2**24 x 4 float32 = 256 MiB of output alone,
    # far below MAX_ELEMENTS.
    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory",
                        lambda: real._replace(available=64 * 2**20, free=64 * 2**20))
    with pytest.raises(ShapeError, match="memory"):
        ct.Conv1DTranspose(np.ones((2, 4, 3), np.float32), [1, 2**24, 4], 2)
