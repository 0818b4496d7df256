"""A runtime-only TVM (no compiler library; TVM_USE_RUNTIME_LIB=1 stands in for one), as on
a deployment box that runs artifacts built elsewhere: cache hits and artifact directories
run, and what needs the compiler says so."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conv1d_transpose import Conv1DTranspose
from conv1d_transpose.compile.targets import cuda_device, load_targets

LAYER = dict(output_shape=(2, 18, 5), strides=3, padding="SAME")


def runtime_only(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)


def arrays():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((2, 6, 4)).astype("float32"),
            rng.standard_normal((4, 5, 4)).astype("float32"))


@pytest.fixture
def avx2_cache(tmp_path):
    """A cache holding the x86-avx2 build of LAYER, made with the full TVM."""
    if not load_targets()["x86-avx2"].capabilities().can_run:
        pytest.skip("this CPU cannot run x86-avx2 code (no AVX2/FMA)")
    x, f = arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "f.npy", f)
    op = Conv1DTranspose(f, **LAYER, backend="tvm", target="x86-avx2",
                         cache_dir=tmp_path / "cache")
    np.save(tmp_path / "y.npy", op(x))
    return tmp_path


def test_a_cache_hit_runs_on_a_runtime_only_tvm(avx2_cache):
    proc = runtime_only(f"""
        import json, numpy as np, tvm
        from conv1d_transpose import Conv1DTranspose
        from conv1d_transpose.graph.reference import max_error
        x, f = np.load("x.npy"), np.load("f.npy")
        op = Conv1DTranspose(f, **{LAYER!r}, backend="tvm", target="x86-avx2",
                             cache_dir="cache")
        y = op(x)
        print(json.dumps({{"runtime_only": tvm.base._RUNTIME_ONLY, "backend": op.backend,
                           "same": bool(np.array_equal(y, np.load("y.npy"))),
                           "ok": max_error(y, x, f, op.spec)[1]}}))
    """, avx2_cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"runtime_only": True, "backend": "tvm:x86-avx2", "same": True, "ok": True}


def test_what_needs_the_compiler_says_so_on_a_runtime_only_tvm(avx2_cache):
    # 'host' resolves mcpu: native through TVM's compiler library: a clear error from the
    # CLI, and the op's automatic choice falls back to onnxruntime.
    proc = runtime_only("""
        import numpy as np, warnings
        from conv1d_transpose import Conv1DTranspose
        from conv1d_transpose.graph.reference import max_error
        x, f = np.load("x.npy"), np.load("f.npy")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            op = Conv1DTranspose(f, output_shape=(2, 18, 5), strides=3, cache_dir="cache")
        print(op.backend, max_error(op(x), x, f, op.spec)[1])
        print(" | ".join(str(w.message) for w in caught))
    """, avx2_cache)
    assert proc.returncode == 0, proc.stderr
    backend_line, warning_line = proc.stdout.splitlines()[-2:]
    assert backend_line == "onnxruntime:cpu True"
    assert "runtime-only" in warning_line
    # A model that is not cached cannot be compiled: the op says why, naming the target.
    proc = runtime_only("""
        import numpy as np
        from conv1d_transpose import Conv1DTranspose
        f = np.ones((3, 2, 2), np.float32)
        try:
            Conv1DTranspose(f, (1, 8, 2), 2, backend="tvm", target="x86-avx2", cache_dir="cache")
        except ValueError as error:
            print(type(error).__name__, error)
    """, avx2_cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("BackendError"), proc.stdout


def test_tvms_cuda_runtime_is_loaded_on_a_runtime_only_tvm(tmp_path):
    proc = runtime_only("""
        from conv1d_transpose.graph.errors import BackendError
        from conv1d_transpose.runtime.tvm_backend import load_cuda_runtime
        import tvm
        try:
            load_cuda_runtime()
        except BackendError as error:
            print("refused:", error)
        else:
            print("loaded:", tvm.cuda(0).exist)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    if cuda_device() is None:
        assert "refused: TVM's CUDA runtime did not load" in proc.stdout
        assert "libcuda.so.1" in proc.stdout
    else:
        assert proc.stdout.strip() == "loaded: True"
