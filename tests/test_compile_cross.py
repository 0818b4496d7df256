"""Builds for targets other than this CPU: CUDA (device code in the library) and aarch64
(cross-linked ELF). Runs are checked where this machine can run them and refused with
the reason where it cannot."""
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from models import small_model

from conv1d_transpose.compile import targets as targets_module
from conv1d_transpose.compile.artifact import compile_model
from conv1d_transpose.compile.build import fatbin_entries, replace_cuda_code
from conv1d_transpose.compile.targets import load_targets
from conv1d_transpose.graph import max_error
from conv1d_transpose.graph.errors import BackendError
from conv1d_transpose.runtime.tvm_backend import TVMSession

EM_AARCH64, EM_X86_64 = 183, 62
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="nvcc not found: CUDA device code cannot be built here")
needs_aarch64_gcc = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None,
    reason="aarch64-linux-gnu-gcc not found (Debian: apt-get install gcc-aarch64-linux-gnu)")


def elf_machine(path) -> tuple[int, int]:
    """(EI_CLASS, e_machine) of an ELF file: 2 = 64-bit; 183 = AArch64, 62 = x86-64."""
    with open(path, "rb") as file:
        header = file.read(20)
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return header[4], struct.unpack_from("<H", header, 18)[0]


# -- CUDA -------------------------------------------------------------------------------------

@needs_nvcc
@pytest.mark.parametrize("target, arch", (("cuda-sm80", "80"), ("cuda-sm90", "90")))
def test_cuda_artifact_carries_device_code_for_its_arch(target, arch):
    artifact = compile_model(small_model()[2], target)
    device = artifact.manifest["device_code"]
    assert device["format"] == "fatbin"
    assert device["archs"] == [f"compute_{arch}", f"sm_{arch}"]
    assert f"arch=compute_{arch},code=[sm_{arch},compute_{arch}]" in artifact.manifest["options"]["nvcc"]
    with open(artifact.library_path, "rb") as file:
        library = file.read()
    machines = {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}
    if artifact.manifest["machine"] in machines:
        assert elf_machine(artifact.library_path) == (2, machines[artifact.manifest["machine"]])
    entries = fatbin_entries(library)
    assert ("elf", f"sm_{arch}") in entries and ("ptx", f"compute_{arch}") in entries
    assert all(a.endswith(arch) for _, a in entries)  # nothing for other GPUs
    assert b"__global__" not in library  # the CUDA C source is gone, replaced by the fatbin


@needs_nvcc
def test_tvm_reads_the_fatbin_back_from_the_library():
    # TVM's own loader parses the library blob; a stand-in for the CUDA runtime's
    # ffi.Module.load_from_bytes.cuda (not loadable without libcuda.so.1) receives the
    # CUDA module's bytes, which must be [fmt "fatbin"][function map][the fatbin].
    artifact = compile_model(small_model()[2], "cuda-sm90")
    code = textwrap.dedent(f"""
        import struct, tvm, tvm_ffi
        from conv1d_transpose.compile.build import fatbin_entries
        seen = []
        @tvm_ffi.register_global_func("ffi.Module.load_from_bytes.cuda", override=True)
        def load(data):
            data = bytes(data)
            size = struct.unpack_from("<Q", data)[0]
            fmt = data[8:8 + size].decode()
            seen.append((fmt, fatbin_entries(data)))
            return tvm.get_global_func("runtime.SourceModuleCreate")("", "cuda")
        module = tvm.runtime.load_module({artifact.library_path!r})
        print(seen)
        kinds, stack = [], [module]
        while stack:
            kinds.append(stack[-1].kind)
            stack.extend(stack.pop().imports)
        print(kinds)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    seen, kinds = result.stdout.strip().splitlines()
    assert seen == "[('fatbin', [('elf', 'sm_90'), ('ptx', 'compute_90')])]"
    assert kinds == "['relax.VMExecutable', 'library', 'source']"  # source: the stand-in


def library_blob(cuda_module: bytes) -> bytes:
    """A tvm-ffi library blob: module 0 the host library ("_lib"), importing a CUDA module."""
    body = (struct.pack("<QQQQ", 3, 0, 1, 1) + struct.pack("<QQ", 1, 1)  # indptr, children
            + struct.pack("<Q", 4) + b"_lib"
            + struct.pack("<Q", 4) + b"cuda" + struct.pack("<Q", len(cuda_module)) + cuda_module)
    return struct.pack("<Q", len(body)) + body


def cuda_module(fmt: bytes, function_map: bytes, code: bytes) -> bytes:
    return struct.pack("<Q", len(fmt)) + fmt + function_map + struct.pack("<Q", len(code)) + code


def test_blob_rewrite_keeps_the_function_map():
    function_map = b"\x01\x00\x00\x00\x00\x00\x00\x00" + b"opaque function table"
    source = "extern \"C\" __global__ void k() {}"
    blob = library_blob(cuda_module(b"cuda", function_map, source.encode()))
    fatbin = b"\x50\xed\x55\xba" + b"F" * 12
    assert replace_cuda_code(blob, {source: fatbin}) == \
        library_blob(cuda_module(b"fatbin", function_map, fatbin))
    with pytest.raises(BackendError, match="not the CUDA source"):
        replace_cuda_code(blob, {"other source": fatbin})
    # Built where TVM compiled the kernels itself: a binary module passes through untouched.
    compiled = library_blob(cuda_module(b"cubin", function_map, b"\x7fELF..."))
    assert replace_cuda_code(compiled, {}) == compiled
    with pytest.raises(BackendError, match="header says"):
        replace_cuda_code(blob[:-1], {source: fatbin})


def hide_nvcc(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: None if name == "nvcc" else real_which(name, *a, **k))


def test_cuda_without_nvcc_ships_the_source(monkeypatch, tmp_path):
    hide_nvcc(monkeypatch)
    artifact = compile_model(small_model()[2], "cuda-sm90", cache_dir=tmp_path)
    assert artifact.manifest["device_code"]["format"] == "cuda-source"
    assert artifact.manifest["options"]["cuda_device_code"] == "source"
    with open(artifact.library_path, "rb") as file:
        library = file.read()
    assert b"__global__" in library and not fatbin_entries(library)


@needs_nvcc
def test_a_machine_without_nvcc_finds_the_cached_nvcc_build(monkeypatch, tmp_path):
    # Artifacts built where nvcc is, then run on a GPU box without it (or without TVM's
    # compiler): the cache hit is the ready fatbin, not a rebuild from source.
    built = compile_model(small_model()[2], "cuda-sm90", cache_dir=tmp_path)
    assert built.manifest["device_code"]["format"] == "fatbin"
    hide_nvcc(monkeypatch)
    found = compile_model(small_model()[2], "cuda-sm90", cache_dir=tmp_path)
    assert found.path == built.path
    assert found.manifest["device_code"]["format"] == "fatbin"
    assert len([p for p in tmp_path.iterdir() if (p / "manifest.json").is_file()]) == 1


def test_cuda_run_is_refused_without_a_gpu():
    if targets_module.cuda_device() is not None:
        pytest.skip("a GPU is present: see test_cuda_session_matches_reference")
    with pytest.raises(BackendError, match=r"'cuda-sm90' cannot run on this machine: .*no GPU"):
        TVMSession(small_model()[2], "cuda-sm90")


@pytest.mark.parametrize("dtype", ("float32", "float16"))
def test_cuda_session_matches_reference(dtype):
    device = targets_module.cuda_device()
    if device is None:
        pytest.skip("no GPU")
    target = next((name for name in ("cuda-sm90", "cuda-sm80")
                   if load_targets()[name].capabilities().can_run), None)
    if target is None:
        pytest.skip(f"no shipped CUDA target runs on {device[0]} (sm_{device[1][0]}{device[1][1]})")
    spec, filters, model = small_model(dtype)
    session = TVMSession(model, target)
    x = np.random.default_rng(1).standard_normal(spec.input_shape).astype(dtype)
    got, = session.run(None, {"input": x})
    assert max_error(got, x, filters, spec)[1]


@needs_nvcc
def test_a_dynamic_width_model_builds_one_cuda_artifact(tmp_path):
    """A free time axis on CUDA: one artifact for every width (the symbolic-width CUDA
    kernel, scheduled), with device code for its arch; where a GPU is, it runs at
    several widths against the reference."""
    from conv1d_transpose.graph import build_model, make_spec

    f = np.random.default_rng(2).standard_normal((16, 8, 16)).astype(np.float32)
    spec = make_spec((1, 16, 20), f.shape, (1, 8, 160), 8, "SAME", "NCW", 1, "float32")
    artifact = compile_model(build_model(spec, f, dynamic_width=True), "cuda-sm90",
                             cache_dir=tmp_path)
    assert artifact.manifest["scheduled"]
    assert artifact.manifest["inputs"][0]["shape"] == [1, 16, "in_width"]
    assert artifact.manifest["device_code"]["format"] == "fatbin"
    if targets_module.cuda_device() is None or \
            not load_targets()["cuda-sm90"].capabilities().can_run:
        return  # (the run needs an sm_90 GPU: the device check)
    session = TVMSession(artifact)
    for width in (1, 7, 100, 1000):
        x = np.random.default_rng(width).standard_normal((1, 16, width)).astype(np.float32)
        at = make_spec(x.shape, f.shape, (1, 8, 8 * width), 8, "SAME", "NCW", 1, "float32")
        (y,) = session.run(None, {"input": x})
        assert max_error(y, x, f, at)[1], width


# -- aarch64 ----------------------------------------------------------------------------------

@needs_aarch64_gcc
@pytest.mark.parametrize("target", ("arm64", "rpi4"))
def test_aarch64_build_is_an_aarch64_shared_library(target):
    artifact = compile_model(small_model()[2], target)
    assert elf_machine(artifact.library_path) == (2, EM_AARCH64)
    assert artifact.manifest["machine"] == "aarch64"
    assert artifact.manifest["linker"] == "aarch64-linux-gnu-gcc"
    assert artifact.manifest["options"]["cross_compiler"] == "aarch64-linux-gnu-gcc"
    if targets_module.local_machine() != "aarch64":
        with pytest.raises(BackendError, match="cannot run"):
            TVMSession(small_model()[2], target)


@needs_aarch64_gcc
@needs_nvcc
def test_jetson_build_is_aarch64_with_sm87_device_code():
    artifact = compile_model(small_model()[2], "jetson-orin")
    assert elf_machine(artifact.library_path) == (2, EM_AARCH64)
    with open(artifact.library_path, "rb") as file:
        assert ("elf", "sm_87") in fatbin_entries(file.read())


def test_cross_build_without_the_cross_compiler_is_refused(monkeypatch, tmp_path):
    if targets_module.local_machine() == "aarch64":
        pytest.skip("arm64 is native here")
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k:
                        None if name == "aarch64-linux-gnu-gcc" else real_which(name, *a, **k))
    # An empty cache: a cached build would be served without the cross compiler.
    with pytest.raises(BackendError, match=r"'arm64': cannot build \(aarch64-linux-gnu-gcc not found\)"):
        compile_model(small_model()[2], "arm64", cache_dir=tmp_path)


@needs_nvcc
@pytest.mark.parametrize("plans, tags", [
    ({"ROWS": "1,4", "THREADS": "32,64"},
     ["tiny__r1_t32", "tiny__r1_t64", "tiny__r4_t32", "tiny__r4_t64"]),
    # The rule's plan for the layer (a shared-memory one: 40 channels -> the 32 tile) and
    # an explicit shared-memory plan.
    ({"SHARED": "rule;4,16,8,4,32"}, ["tiny__r2_t16_y8_c2_k16_v4", "tiny__r4_t16_y8_c4_k32"]),
], ids=["register", "shared"])
def test_the_gpu_tool_builds_kernel_variants_with_device_code(tmp_path, plans, tags):
    # tools/gpu (docs/design/cuda.md) stages what a lent GPU machine checks and times; its
    # build step is what could rot here, so it runs on a one-layer suite.
    import json

    workloads = tmp_path / "w.yaml"
    workloads.write_text("workloads:\n  - {name: tiny, batch: 1, width: 800, cin: 8, cout: 40, "
                         "kernel: 4, stride: 2, padding: SAME}\n")
    env = {**os.environ, "WORKLOADS": str(workloads), "JOBS": "1", **plans}
    script = os.path.join(os.path.dirname(__file__), "..", "tools", "gpu", "build_variants.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert sorted(index) == tags
    for tag in index:
        with open(tmp_path / "out" / f"{tag}.so", "rb") as file:
            assert ("elf", "sm_90") in fatbin_entries(file.read())
