"""compile/kernels + compile/lowering: the polyphase conv1d_transpose kernel.

The phase arithmetic is checked exhaustively as pure integers; the compiled kernel is
checked against the numpy reference on a sweep chosen to cover every case of the phase
decomposition (K < s, K not a multiple of s, dilation with stride, inactive phases,
SAME/VALID, output_padding, NWC/NCW, batch 0..2, every dtype) and every schedule shape
(register tiles, the "rows" and "filters" orders, the blocked reduction, AVX-512, AVX2,
SSE, NEON, CUDA): a kernel that is fast and wrong is easy to make (MetaSchedule made one).
"""
import dataclasses
import itertools
import shutil

import numpy as np
import pytest

from conv1d_transpose.compile import lowering
from conv1d_transpose.compile.kernels import (KERNEL_VERSION, Geometry, Tiling, decompose,
                                              fold_filters, kernel_geometry, pack_filters,
                                              plan_layout)
from conv1d_transpose.compile.kernels import schedule_cpu
from conv1d_transpose.graph import build_model, max_error, sweeps

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.relax.frontend.onnx import from_onnx  # noqa: E402

AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}


def host_target():
    from tvm.target import codegen

    return tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(),
                              "num-cores": 2})


# --- the phase decomposition, as integers --------------------------------------------


@pytest.mark.parametrize("stride", range(1, 9))
def test_every_tap_lands_in_exactly_one_phase_at_its_output(stride):
    for K, d, pad_begin in itertools.product(range(1, 10), range(1, 5), range(0, 12)):
        geometry = Geometry(1, 7, 1, 40, 1, K, stride, d, pad_begin, "NWC", "float32")
        dec = decompose(geometry)
        hits = []
        for phase in dec.phases:
            assert phase.taps == 0 or phase.shift >= 0
            for j in range(phase.taps):
                k = phase.first_tap + j * dec.tap_step
                # Input row w = q - shift - j*row_step lands at u = q*s + r:
                # u - w*s must be k*d for every q.
                q = 11
                w = q - phase.shift - j * dec.row_step
                assert q * stride + phase.r - w * stride == k * d
                hits.append(k)
        assert sorted(hits) == list(range(K)), (K, stride, d)


def test_phases_without_taps_exist_only_off_the_gcd_lattice():
    dec = decompose(Geometry(1, 5, 1, 10, 1, 3, 4, 2, 0, "NWC", "float32"))
    assert [p.taps > 0 for p in dec.phases] == [True, False, True, False]
    assert decompose(Geometry(1, 5, 1, 10, 1, 2, 5, 1, 0, "NWC", "float32")).max_taps == 1


# --- the compiled kernel against the reference ---------------------------------------


def compile_and_run(spec, x, f, target=None):
    target = target or host_target()
    mod, scheduled = lowering.apply(from_onnx(build_model(spec, f, form="explicit")), target)
    executable = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return scheduled, vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()


def random_arrays(spec, seed=0):
    return sweeps.random_arrays(spec.input_shape, spec.filters_shape, spec.dtype, seed)


def make(*case, dtype="float32"):
    """The spec of (batch, width, cin, out_width, cout, K, s, d, padding, layout)."""
    return sweeps.Layer(*case).spec(dtype)


def check(spec, target=None, x=None, f=None):
    if x is None:
        x, f = random_arrays(spec)
    scheduled, y = compile_and_run(spec, x, f, target)
    assert scheduled
    error, ok = max_error(y, x, f, spec)
    assert ok, (spec, error)


# Batch 0 imports as a symbolic batch.
@pytest.mark.parametrize("layer", list(sweeps.small_sweep()),
                         ids=lambda layer: "-".join(map(str, dataclasses.astuple(layer))))
def test_small_shapes_match_reference(layer):
    check(layer.spec())


# Shapes that reach every branch of the CPU schedule: (case, expected plan).
SCHEDULES = {
    # Register tile over two 64-channel blocks, padded output and input channels.
    "rows-two-channel-blocks": ((2, 37, 20, 74, 70, 4, 2, 1, "SAME", "NWC"), "rows"),
    # A row of the tile covers both phases of a 32-channel output (hifigan-up4-like).
    "rows-phases-in-tile": ((1, 50, 64, 100, 32, 4, 2, 1, "SAME", "NWC"), "rows"),
    # Stride 1 with dilation (the "dilated" workload's form), NCW.
    "rows-dilated-ncw": ((1, 40, 128, 40, 128, 3, 1, 4, "SAME", "NCW"), "rows"),
    # Phases with different tap counts (K=3, s=2): one block per phase, shared input copy.
    "rows-uneven-phases": ((2, 30, 130, 59, 40, 3, 2, 1, "SAME", "NCW"), "rows"),
    # Large filters: (channel block, phase) panels are the parallel loop (hifigan-up2),
    # in the Winograd F(2,2) form (K = 2s, 256 input channels).
    "filters": ((2, 20, 256, 160, 128, 16, 8, 1, "SAME", "NWC"), "filters-winograd"),
    # The same in the direct form (below 16 MFLOP, F(2,2)'s launches would cost more).
    "filters-direct": ((2, 5, 96, 40, 128, 16, 8, 1, "SAME", "NWC"), "filters"),
    # F(2,2) with row tiles (phases in the tile): K = 2s = 4, output width 599 (cropped).
    "rows-winograd": ((1, 300, 256, 599, 32, 4, 2, 1, "SAME", "NWC"), "rows-winograd"),
    "filters-ncw": ((1, 20, 256, 160, 128, 16, 8, 1, "SAME", "NCW"), "filters-winograd"),
    "filters-ncw-direct": ((1, 5, 96, 40, 128, 16, 8, 1, "SAME", "NCW"), "filters"),
    # A filter panel larger than L2: the reduction is blocked (demucs-dec1-like, VALID).
    "filters-blocked": ((1, 9, 600, 40, 64, 8, 4, 1, "VALID", "NWC"), "filters-blocked"),
    # (NCW tiles are one vector wide, so a blocked NCW panel needs more input channels.)
    "filters-blocked-symbolic-batch": ((0, 9, 2400, 40, 64, 8, 4, 1, "VALID", "NCW"),
                                       "filters-blocked"),
    # Stride 5, K = 2s, batch 3, output_padding 4.
    "stride5-batch3": ((3, 7, 48, 35, 48, 10, 5, 1, "SAME", "NWC"), "rows"),
    # Dilation with stride: inactive phases (gcd(2, 4) = 2) are zero-filled.
    "dilation-and-stride": ((2, 11, 24, 46, 40, 3, 4, 2, "VALID", "NWC"), "rows"),
    # Three vectors of channels (48) per tile row, stride 3 with dilation 2, NCW.
    "three-vectors-ncw": ((2, 40, 96, 127, 48, 5, 3, 2, "VALID", "NCW"), "rows"),
}


def plan_name(spec, target):
    plan = schedule_cpu.plan(Geometry.from_spec(spec), schedule_cpu.describe_target(target))
    return plan.order + ("-blocked" if plan.blocked else "") + \
        ("-winograd" if plan.winograd else "")


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_branch_matches_reference(name):
    case, expected = SCHEDULES[name]
    spec = make(*case)
    target = host_target()
    if schedule_cpu.describe_target(target).vector_bits == 512:
        assert plan_name(spec, target) == expected
    check(spec, target)


@pytest.mark.parametrize("mcpu", ["haswell", None])
@pytest.mark.parametrize("name", ["rows-two-channel-blocks", "rows-uneven-phases", "filters"])
def test_avx2_and_sse_schedules_match_reference(mcpu, name):
    # AVX2 (16 registers, 8 lanes) and the plain x86-64 target (SSE, 4 lanes) get other
    # register tiles; both run on this machine.
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu} if mcpu else {"kind": "llvm"})
    check(make(*SCHEDULES[name][0]), target)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("case", [
    (2, 5, 3, 10, 5, 4, 2, 1, "SAME", "NWC"),
    (1, 4, 6, 15, 7, 3, 3, 2, "VALID", "NCW"),
    (0, 3, 3, 12, 5, 5, 3, 1, "VALID", "NWC"),
    (1, 37, 20, 74, 70, 4, 2, 1, "SAME", "NWC"),
    (1, 5, 256, 40, 128, 16, 8, 1, "SAME", "NCW"),
], ids=lambda c: "-".join(map(str, c)))
def test_float16_and_float64_match_reference(dtype, case):
    # float16 accumulates in float32 (its tolerance is one float16 rounding).
    check(make(*case, dtype=dtype))


@pytest.mark.parametrize("case", [
    (2, 6, 4, 12, 5, 4, 2, 1, "SAME", "NWC"),  # two taps per phase
    (1, 6, 4, 11, 5, 3, 2, 1, "SAME", "NCW"),  # phases with 2 and 1 taps
    (1, 6, 4, 18, 5, 2, 3, 1, "VALID", "NWC"),  # K < s: a phase with no taps
], ids=lambda c: "-".join(map(str, c)))
def test_nan_and_inf_in_the_input_propagate_exactly_as_tensorflow(case):
    # A padded tap (zero weight) on a real input would turn Inf into NaN where TF has a
    # finite value or Inf: the kernel must have none.
    spec = make(*case)
    x, f = random_arrays(spec)
    flat = x.reshape(-1)
    flat[3], flat[10], flat[17] = np.inf, np.nan, -np.inf
    check(spec, x=x, f=f)


# --- the Relax rewrite ----------------------------------------------------------------


def op_names(mod):
    names = set()

    def visit(expr):
        op = getattr(expr, "op", None)
        if isinstance(op, tvm.ir.Op):
            names.add(op.name)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return names


@pytest.mark.parametrize("layout", ["NWC", "NCW"])
def test_apply_replaces_the_op_and_its_transposes_with_one_kernel(layout):
    spec = make(1, 8, 4, 16, 20, 4, 2, 1, "SAME", layout)
    mod = from_onnx(build_model(spec, random_arrays(spec)[1], form="explicit"))
    assert "relax.nn.conv1d_transpose" in op_names(mod)
    lowered, scheduled = lowering.apply(mod, host_target())
    assert scheduled
    assert op_names(lowered) == {"relax.call_tir"}  # no conv, no permute_dims
    kernels = [(gv.name_hint, f) for gv, f in lowered.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc)]
    assert [name for name, _ in kernels] == ["conv1d_transpose_polyphase"]
    attrs = kernels[0][1].attrs
    assert attrs["tirx.is_scheduled"] and int(attrs["op_pattern"]) == 8
    assert attrs["conv1d_transpose.kernel_version"] == KERNEL_VERSION
    # After the whole default pipeline: nothing else was legalized or fused into it.
    stats = tvm.compile(lowered, target=host_target()).stats()
    functions = stats.split("Globals")[1]
    assert "conv1d_transpose_polyphase" in functions
    assert "transpose," not in functions and "conv1d_transpose]" not in functions


def test_apply_refuses_what_it_cannot_lower_and_leaves_the_module_unchanged():
    spec = make(1, 8, 4, 16, 6, 4, 2, 1, "SAME", "NWC")
    x, f = random_arrays(spec)
    target = host_target()
    # Filters as a graph input: nothing to pack at compile time.
    mod = from_onnx(build_model(spec, None, form="explicit"))
    assert lowering.apply(mod, target) == (mod, False)
    # Non-finite filters.
    bad = f.copy()
    bad[0, 0, 0] = np.inf
    mod = from_onnx(build_model(spec, bad, form="explicit"))
    assert lowering.apply(mod, target) == (mod, False)
    # A target kind without a schedule.
    mod = from_onnx(build_model(spec, f, form="explicit"))
    assert lowering.apply(mod, tvm.target.Target({"kind": "c"})) == (mod, False)
    # No conv1d_transpose at all: nothing was scheduled.
    empty = tvm.IRModule()
    assert lowering.apply(empty, target) == (empty, False)


def test_apply_refuses_grouped_convolutions():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8], "float32"))
    weight = relax.const(np.ones((4, 3, 2), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv1d_transpose(x, weight, strides=2, groups=2))
        bb.emit_func_output(y)
    mod = bb.get()
    assert lowering.apply(mod, host_target()) == (mod, False)


# --- other targets: aarch64 NEON and CUDA, built here without their hardware ----------


def lowered_for(target, layout="NWC"):
    spec = make(1, 16, 32, 32, 32, 4, 2, 1, "SAME", layout)
    mod = from_onnx(build_model(spec, random_arrays(spec)[1], form="explicit"))
    lowered, scheduled = lowering.apply(mod, tvm.target.Target(target))
    assert scheduled
    return lowered


def test_aarch64_build_uses_neon_fmla_on_four_float32_lanes(tmp_path):
    import re

    executable = tvm.compile(lowered_for(AARCH64), target=tvm.target.Target(AARCH64))
    asm = executable.mod.imports[0].inspect_source("asm")
    # The register tile: multiply-adds by one broadcast input element, 4 lanes each.
    assert len(re.findall(r"fmla\s+v\d+\.4s, v\d+\.4s, v\d+\.s\[\d\]", asm)) >= 16
    if shutil.which("aarch64-linux-gnu-gcc"):
        from tvm.support import cc

        path = tmp_path / "lib.so"
        executable.export_library(str(path), fcompile=cc.cross_compiler("aarch64-linux-gnu-gcc"))
        assert path.read_bytes()[:4] == b"\x7fELF" and path.read_bytes()[18] == 183  # EM_AARCH64


# A C harness that runs one compiled PrimFunc `kernel(x, filters, out)` with no TVM
# runtime: it provides the three backend hooks the object file calls through (parallel
# launch, run serially; workspace alloc/free) and the error setter.
AARCH64_HARNESS = r"""
/* Runs one TVM-compiled PrimFunc `kernel(x, filters, out)` without the TVM runtime. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int32_t type_index; uint32_t zero_padding; union { int64_t v_int64; void* v_ptr; }; } Any;
typedef struct { int32_t device_type, device_id; } Device;
typedef struct { uint8_t code, bits; uint16_t lanes; } DataType;
typedef struct { void* data; Device device; int32_t ndim; DataType dtype; int64_t* shape; int64_t* strides; uint64_t byte_offset; } Tensor;
typedef struct { void* sync_handle; int32_t num_task; } Env;
typedef int (*Lambda)(int, Env*, void*);

static int launch(Lambda f, void* cdata, int num_task) { Env env = {0, 1}; return f(0, &env, cdata); }
static void* alloc_ws(int t, int i, uint64_t n, int c, int b) { return aligned_alloc(64, (n + 63) / 64 * 64); }
static int free_ws(int t, int i, void* p) { free(p); return 0; }
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  fprintf(stderr, "%s: ", kind);
  for (int i = 0; i < n; ++i) fputs(parts[i], stderr);
  fputc('\n', stderr);
}
extern void* __TVMBackendParallelLaunch;
extern void* __TVMBackendAllocWorkspace;
extern void* __TVMBackendFreeWorkspace;
extern int __tvm_ffi_kernel(void*, const Any*, int32_t, Any*);

/* usage: harness dir code bits  nx x0 x1 x2  nw w0..w4  no o0 o1 o2 ; reads dir/x.bin dir/w.bin, writes dir/out.bin */
int main(int argc, char** argv) {
  __TVMBackendParallelLaunch = (void*)launch;
  __TVMBackendAllocWorkspace = (void*)alloc_ws;
  __TVMBackendFreeWorkspace = (void*)free_ws;
  int a = 1;
  const char* dir = argv[a++];
  DataType io = {(uint8_t)atoi(argv[a]), (uint8_t)atoi(argv[a + 1]), 1}; a += 2;
  DataType acc = {(uint8_t)atoi(argv[a]), (uint8_t)atoi(argv[a + 1]), 1}; a += 2;
  Tensor t[3]; int64_t shapes[3][8]; Any args[3]; const char* names[3] = {"x.bin", "w.bin", "out.bin"};
  for (int k = 0; k < 3; ++k) {
    int nd = atoi(argv[a++]); size_t count = 1;
    for (int d = 0; d < nd; ++d) { shapes[k][d] = atoll(argv[a++]); count *= shapes[k][d]; }
    DataType dt = k == 1 ? acc : io;
    size_t bytes = count * dt.bits / 8;
    void* data = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    memset(data, 0, bytes);
    if (k < 2) {
      char path[4096]; snprintf(path, sizeof path, "%s/%s", dir, names[k]);
      FILE* f = fopen(path, "rb"); if (!f || fread(data, 1, bytes, f) != bytes) { perror(path); return 2; } fclose(f);
    }
    t[k] = (Tensor){data, {1, 0}, nd, dt, shapes[k], NULL, 0};
    args[k] = (Any){7, 0, {.v_ptr = &t[k]}};
  }
  Any result = {0};
  int rc = __tvm_ffi_kernel(NULL, args, 3, &result);
  if (rc) { fprintf(stderr, "kernel failed: %d\n", rc); return 1; }
  char path[4096]; snprintf(path, sizeof path, "%s/%s", dir, names[2]);
  size_t count = 1; for (int d = 0; d < t[2].ndim; ++d) count *= shapes[2][d];
  FILE* f = fopen(path, "wb"); fwrite(t[2].data, 1, count * io.bits / 8, f); fclose(f);
  return 0;
}
"""
DTYPE_CODES = {"float16": (2, 16), "float32": (2, 32), "float64": (2, 64)}


@pytest.fixture(scope="module")
def aarch64_tools():
    missing = [tool for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64-static")
               if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found (Debian: gcc-aarch64-linux-gnu, "
                    f"qemu-user-static)")


def aarch64_program(func, tmp_path) -> None:
    """Cross-build `func` for aarch64 and link it with the C harness into tmp_path/run."""
    import subprocess
    import tarfile

    target = tvm.target.Target(AARCH64)
    library = tvm.compile(tvm.IRModule({"kernel": func.with_attr("global_symbol", "kernel")}),
                          target=target)
    library.export_library(str(tmp_path / "kernel.tar"))
    with tarfile.open(tmp_path / "kernel.tar") as archive:
        (member,) = archive.getnames()
        archive.extractall(tmp_path)
    (tmp_path / "harness.c").write_text(AARCH64_HARNESS)
    subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-static", "-o", str(tmp_path / "run"),
                    str(tmp_path / "harness.c"), str(tmp_path / member), "-lm"], check=True)


def run_under_qemu(tmp_path, x, packed, output_shape, dtype) -> np.ndarray:
    """The output of tmp_path/run (`aarch64_program`) for input `x` and packed filters."""
    import subprocess

    x.tofile(tmp_path / "x.bin")
    packed.tofile(tmp_path / "w.bin")
    arguments = [str(tmp_path), *map(str, DTYPE_CODES[dtype]),
                 *map(str, DTYPE_CODES[str(packed.dtype)])]
    for shape in (x.shape, packed.shape, output_shape):
        arguments += [str(len(shape)), *map(str, shape)]
    subprocess.run(["qemu-aarch64-static", str(tmp_path / "run"), *arguments], check=True,
                   timeout=120)
    return np.fromfile(tmp_path / "out.bin", dtype=dtype).reshape(output_shape)


@pytest.mark.parametrize("case, dtype", [
    ((2, 37, 20, 74, 70, 4, 2, 1, "SAME", "NWC"), "float32"),  # rows, two channel blocks
    ((2, 30, 13, 59, 40, 3, 2, 1, "SAME", "NCW"), "float32"),  # uneven phases, NCW
    ((1, 20, 256, 160, 128, 16, 8, 1, "SAME", "NWC"), "float32"),  # F(2,2), filters order
    ((1, 5, 96, 40, 128, 16, 8, 1, "SAME", "NWC"), "float32"),  # direct, filters order
    ((1, 9, 600, 40, 64, 8, 4, 1, "VALID", "NCW"), "float32"),  # blocked, phases inner
    ((1, 11, 24, 46, 40, 3, 4, 2, "VALID", "NWC"), "float16"),  # inactive phases
    ((1, 12, 8, 24, 12, 4, 2, 1, "SAME", "NCW"), "float64"),
    ((1, 1000, 64, 1000, 64, 3, 1, 4, "SAME", "NWC"), "float32"),  # F(2,3), dilation 4
], ids=lambda c: "-".join(map(str, c)) if isinstance(c, tuple) else c)
def test_aarch64_neon_kernel_matches_reference_under_qemu(aarch64_tools, tmp_path, case, dtype):
    spec = make(*case, dtype=dtype)
    func, layout = schedule_cpu.build(Geometry.from_spec(spec), tvm.target.Target(AARCH64))
    aarch64_program(func, tmp_path)
    x, f = random_arrays(spec)
    y = run_under_qemu(tmp_path, x, pack_filters(f, layout), spec.output_shape, spec.dtype)
    error, ok = max_error(y, x, f, spec)
    assert ok, error


@pytest.mark.parametrize("layout", ["NWC", "NCW"])
def test_cuda_build_binds_threads_and_carries_the_kernel(layout):
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_80"}, host={"kind": "llvm"})
    executable = tvm.compile(lowered_for(target, layout), target=target)
    modules = [executable.mod]
    for module in modules:
        modules.extend(module.imports)
    (cuda,) = [m for m in modules if m.kind == "cuda"]
    source = cuda.inspect_source("cuda")
    assert "conv1d_transpose_polyphase_kernel" in source
    assert "threadIdx.x" in source and "blockIdx.x" in source


@pytest.mark.parametrize("case", [
    (2, 5, 3, 10, 5, 4, 2, 1, "SAME", "NWC"),
    (0, 4, 3, 14, 5, 3, 3, 2, "VALID", "NCW"),
    (1, 6, 4, 18, 5, 2, 3, 1, "VALID", "NWC"),
    (1, 5, 40, 40, 300, 16, 8, 1, "SAME", "NCW"),
    (1, 7, 8, 7, 8, 3, 1, 4, "SAME", "NWC"),
    # Few channels (issue 27): folded (one output channel, NCW; three, cropped), and one
    # input channel.
    (1, 6, 1, 28, 1, 8, 4, 1, "VALID", "NCW"),
    (2, 5, 3, 19, 3, 8, 4, 1, "SAME", "NCW"),
    (1, 7, 1, 14, 20, 3, 2, 1, "SAME", "NWC"),
], ids=lambda c: "-".join(map(str, c)))
# None: the plan rule's choice; then register tiles of rows that do not divide the rows;
# then shared-memory plans (rows, threads, row_threads, channels, in_chunk): the rule's
# three, and odd ones whose tiles divide neither rows, channels nor input channels.
# The last two skew the staged input's rows (CudaPlan.skew).
@pytest.mark.parametrize("plan", [None, (4, 32), (3, 64), (4, 32, 4, 4, 16), (4, 16, 8, 4, 32),
                                  (2, 16, 8, 2, 16), (3, 8, 2, 3, 5), (4, 32, 4, 4, 16, 4, 1),
                                  (3, 8, 2, 3, 5, 1, 2)], ids=str)
def test_cuda_schedule_computes_the_reference_when_run_serially_on_the_cpu(case, plan):
    # The CUDA schedule's loop nest, with its thread loops left serial, compiled for the
    # CPU: the GPU check runs where a GPU is (test_compile_cross, docs/design/cuda.md).
    import dataclasses

    from conv1d_transpose.compile.kernels import schedule_cuda

    spec = make(*case)
    # (The kernel the lowering builds: folded where the layer folds.)
    geometry = kernel_geometry(Geometry.from_spec(spec))
    if spec.batch == 0:
        geometry = dataclasses.replace(geometry, batch=None)
    plan = schedule_cuda.CudaPlan(*plan) if plan else None
    func, layout = schedule_cuda.build(geometry, bind_threads=False, plan=plan)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target=tvm.target.Target({"kind": "llvm"}))
    x, f = random_arrays(spec)
    out = tvm.runtime.empty(spec.output_shape, spec.dtype, tvm.cpu())
    packed = pack_filters(fold_filters(f, geometry), layout)
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(packed), out)
    error, ok = max_error(out.numpy(), x, f, spec)
    assert ok, error


def _launch_threads(geometry, plan):
    dec = decompose(geometry)
    phases = dec.stride if dec.uniform_shift_step() is not None else 1
    channels = -(-geometry.out_channels // plan.threads) * plan.threads
    return (geometry.batch or 1) * -(-dec.rows // plan.rows) * phases * channels


@pytest.mark.parametrize("width", [1, 10, 50, 200, 1600, 25600])
@pytest.mark.parametrize("channels", [(512, 256, 16, 8), (128, 64, 4, 2), (2048, 1024, 8, 4),
                                      (96, 96, 3, 1)], ids=str)
def test_cuda_register_plan_keeps_the_gpu_busy_and_tiles_long_layers(width, channels):
    from conv1d_transpose.compile.kernels.schedule_cuda import (MAX_ROWS, MIN_LAUNCH_THREADS,
                                                                CudaPlan, register_plan)

    cin, cout, k, s = channels
    geometry = Geometry.from_spec(make(1, width, cin, width * s, cout, k, s, 1, "SAME", "NWC"))
    plan = register_plan(geometry)
    assert plan.threads % 32 == 0 and plan.rows in (1, 2, 4, 8) and plan.rows <= MAX_ROWS
    assert plan.threads == (64 if cout >= 512 else 32)
    # The most rows that keep a launch at MIN_LAUNCH_THREADS: one more doubling would not.
    if plan.rows > 1:
        assert _launch_threads(geometry, plan) >= MIN_LAUNCH_THREADS
    if plan.rows < MAX_ROWS:
        assert _launch_threads(geometry, CudaPlan(plan.rows * 2, plan.threads)) < MIN_LAUNCH_THREADS
    # A longer layer never gets fewer rows per thread.
    longer = Geometry.from_spec(make(1, 2 * width, cin, 2 * width * s, cout, k, s, 1, "SAME", "NWC"))
    assert register_plan(longer).rows >= plan.rows


def _blocks(geometry, plan):
    dec = decompose(geometry)
    # Every phase group's blocks: one launch for all phases (merged), else one per phase.
    phases = dec.stride if dec.uniform_shift_step() is not None else len(dec.active)
    tile = plan.threads * plan.channels
    return (geometry.batch or 1) * -(-dec.rows // (plan.rows * plan.row_threads)) * phases * \
        -(-geometry.out_channels // tile)


@pytest.mark.parametrize("case", [
    # (width, cin, cout, kernel, stride, dilation)
    (1600, 256, 128, 16, 8, 1), (64, 2048, 1024, 8, 4, 1), (25600, 64, 32, 4, 2, 1),
    (1200, 100, 50, 6, 3, 1), (3000, 96, 96, 3, 2, 2), (10, 512, 256, 16, 8, 1),
    (1000, 192, 96, 7, 3, 1), (4000, 128, 128, 3, 1, 4), (2000, 256, 256, 33, 1, 1),
    (4000, 512, 128, 15, 1, 1),
], ids=str)
def test_cuda_plan_rule_shares_memory_where_a_tile_keeps_the_gpu_busy(case):
    from conv1d_transpose.compile.kernels.schedule_cuda import (MAX_SHARED_BYTES, MIN_BLOCKS,
                                                                SHARED_PLANS, choose_plan,
                                                                register_plan, shared_bytes)

    width, cin, cout, k, s, d = case
    geometry = Geometry.from_spec(make(1, width, cin, width * s, cout, k, s, d, "SAME", "NWC"))
    plan = choose_plan(geometry)

    def fits(p):  # enough blocks, and shared memory within budget at the smallest chunk
        return _blocks(geometry, p) >= MIN_BLOCKS and \
            shared_bytes(geometry, dataclasses.replace(p, in_chunk=2)) <= MAX_SHARED_BYTES

    if not plan.shared:
        assert plan == register_plan(geometry)
        # Fallback only where no tile keeps MIN_BLOCKS blocks within the shared-memory
        # budget.
        assert all(not fits(p) for p in SHARED_PLANS.values())
        return
    tile = plan.threads * plan.channels
    assert tile in SHARED_PLANS and cout % tile == 0 or tile == min(SHARED_PLANS)
    # The widest dividing tile that fits: every wider one that divides does not.
    for wider, other in SHARED_PLANS.items():
        if wider > tile and cout % wider == 0:
            assert not fits(other)
    assert _blocks(geometry, plan) >= MIN_BLOCKS
    assert shared_bytes(geometry, plan) <= MAX_SHARED_BYTES
    assert plan.in_chunk >= 1 and plan.in_chunk <= SHARED_PLANS[tile].in_chunk


def _cuda_source(geometry, plan=None):
    from conv1d_transpose.compile.kernels import schedule_cuda

    func, _ = schedule_cuda.build(geometry, plan=plan)
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host={"kind": "llvm"})
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    return "".join(m.inspect_source("cuda") for m in [lib.mod, *lib.mod.imports]
                   if m.kind == "cuda")


@pytest.mark.parametrize("cin, data_format, input_vectors", [
    (64, "NWC", True), (6, "NWC", False), (64, "NCW", False)])
def test_cuda_vector_loads_read_the_input_only_where_aligned(cin, data_format, input_vectors):
    # A float4 load from an address that is not 16-byte aligned faults on the GPU. The
    # input rows start at multiples of cin, so only NWC inputs with cin % 4 == 0 may be
    # read in float4s; elsewhere every load must be a scalar one (the schedule does not
    # ask for vectors there, and the padding guard would split them anyway). The packed
    # filters always are (channel tiles of 32 and more).
    from conv1d_transpose.compile.kernels import schedule_cuda

    geometry = Geometry.from_spec(make(1, 3000, cin, 6000, 64, 4, 2, 1, "SAME", data_format))
    plan = schedule_cuda.choose_plan(geometry)
    assert plan.shared and plan.vector == 4
    source = _cuda_source(geometry, plan)
    assert "*(float4*)(filters_ptr" in source
    assert ("*(float4*)(x_ptr" in source) == input_vectors


@pytest.mark.parametrize("name", ["hifigan-up2", "dilated", "hifigan-up4", "ncw-up2"])
def test_cuda_shared_plan_stages_the_whole_blocks_tile(name):
    # The shared buffers of the generated CUDA source hold the tile of the whole thread
    # block (shared_bytes), not of one thread: staged with the global scope, compute_at
    # under the thread loops sizes the padded input per thread, which runs correctly on
    # the CPU (threads serial) and wrongly on a GPU. CUDA source needs no GPU or nvcc.
    import re

    from conv1d_transpose.compile.kernels import schedule_cuda
    from conv1d_transpose.workloads import find_workload

    geometry = Geometry.from_spec(find_workload(name).spec())
    plan = schedule_cuda.choose_plan(geometry)
    assert plan.shared
    source = _cuda_source(geometry, plan)
    shared = {name: int(size) for name, size in
              re.findall(r"__shared__ [^;]*float (\w+)\[(\d+)\];", source)}
    assert set(shared) == {"filters_shared_ptr", "xp_shared_ptr"}
    assert 4 * sum(shared.values()) == schedule_cuda.shared_bytes(geometry, plan)
    assert source.count("__syncthreads()") >= 2
    # NCW fills write down the staged rows: rows in_chunk + 1 apart spread a warp's
    # writes over the banks; NWC fills write float4s along a row, which must stay aligned.
    ncw = geometry.data_format == "NCW"
    assert plan.skew == (1 if ncw else 0)
    if ncw:
        writes = re.findall(r"xp_shared_ptr\[([^\]]*)\] = ", source)
        assert writes and all(f"* {plan.in_chunk + 1})" in index for index in writes)
    else:
        assert "*(float4*)(xp_shared_ptr" in source


# --- the Winograd F(2,2) form ----------------------------------------------------------


def run_plan(spec, cpu_plan, x, f, target=None):
    """The kernel of one CPU plan, built and run on its own (as `tune` does)."""
    target = target or host_target()
    func, layout = schedule_cpu.build(Geometry.from_spec(spec), target, cpu_plan)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target=target).jit()
    args = [tvm.runtime.tensor(x), tvm.runtime.tensor(pack_filters(f, layout)),
            tvm.runtime.empty(spec.output_shape, spec.dtype)]
    lib["main"](*args)
    return args[2].numpy()


def winograd_plans(spec):
    """Every Winograd plan the tuner would try for the shape, and the rules' own."""
    geometry, cpu = Geometry.from_spec(spec), schedule_cpu.describe_target(host_target())
    plans = [p for p in schedule_cpu.candidate_plans(geometry, cpu) if p.winograd]
    return plans + [schedule_cpu.plan(geometry, cpu, winograd=True)]


WINOGRAD_CASES = [
    (1, 9, 20, 18, 24, 4, 2, 1, "SAME", "NWC"),  # padded channels, 9 rows (odd)
    (2, 7, 16, 34, 16, 8, 4, 1, "VALID", "NWC"),  # batch 2, VALID: edge pairs cut
    (1, 6, 8, 29, 12, 10, 5, 1, "SAME", "NWC"),  # stride 5, output width 29 of 26..30
    (1, 12, 8, 13, 8, 2, 1, 1, "VALID", "NWC"),  # stride 1, K = 2
    (2, 9, 20, 18, 24, 4, 2, 1, "SAME", "NCW"),  # NCW: transposed in, lanes to rows out
    (1, 6, 8, 29, 12, 10, 5, 1, "SAME", "NCW"),
    (2, 17, 16, 17, 16, 2, 1, 3, "SAME", "NWC"),  # F(2,2), taps 3 rows apart
    # F(2,3): the dilated workload's form (d = 4: pairs of rows 4 apart), NCW
    (1, 40, 24, 40, 20, 3, 1, 4, "SAME", "NCW"),
    (2, 13, 16, 17, 16, 3, 1, 2, "VALID", "NWC"),  # d = 2, batch 2, VALID
    (1, 11, 16, 39, 24, 9, 3, 1, "VALID", "NWC"),  # K = 3s, stride 3
    # Past three taps, sums of F(2,3) and F(2,2) blocks: 4 = 2 + 2 (an ISTFT-like K = 4s),
    # 5 = 3 + 2 (stride 1, NCW), 7 = 3 + 2 + 2 (HiFi-GAN's K 7, d 3), 11 = 3 + 3 + 3 + 2
    # (K 11, d 5, batch 2, VALID)
    # (the three with every candidate plan in the slow run: ~12 s each)
    pytest.param((1, 10, 16, 40, 16, 16, 4, 1, "SAME", "NWC"), marks=pytest.mark.slow),
    pytest.param((1, 21, 12, 21, 20, 5, 1, 1, "SAME", "NCW"), marks=pytest.mark.slow),
    (1, 30, 16, 30, 24, 7, 1, 3, "SAME", "NWC"),
    pytest.param((2, 30, 16, 80, 16, 11, 1, 5, "VALID", "NWC"), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_winograd_plans_match_reference(case):
    from conv1d_transpose.compile.kernels import winograd

    spec = make(*case)
    assert winograd.applies(Geometry.from_spec(spec))
    x, f = random_arrays(spec)
    plans = winograd_plans(spec)
    assert {p.order for p in plans} == {"rows", "filters"}
    for cpu_plan in plans:
        error, ok = max_error(run_plan(spec, cpu_plan, x, f), x, f, spec)
        assert ok, (cpu_plan, error)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("case", [(2, 9, 20, 18, 24, 4, 2, 1, "SAME", "NWC"),
                                  (1, 40, 24, 40, 20, 3, 1, 4, "SAME", "NWC")],
                         ids=["F22", "F23"])
def test_winograd_float16_and_float64_match_reference(dtype, case):
    spec = make(*case, dtype=dtype)
    x, f = random_arrays(spec)
    for cpu_plan in winograd_plans(spec)[-3:]:
        error, ok = max_error(run_plan(spec, cpu_plan, x, f), x, f, spec)
        assert ok, (cpu_plan, error)


@pytest.mark.parametrize("form", ["F22", "F23", "F27"])
@pytest.mark.parametrize("layout", ["NWC", "NCW"])
@pytest.mark.parametrize("special", ["nonfinite", "overflow"])
def test_winograd_gives_tensorflows_answer_where_its_transform_would_not(special, layout,
                                                                        form):
    # x[u] = Inf makes m1 = (x[u-1] - Inf) G1 and m2 = Inf (G0 + G1): Inf - Inf = NaN
    # where the direct sum has +-Inf; +-3e38 neighbours overflow in x[u+1] - x[u] where
    # the direct products stay finite. The fix pass must give the direct answer there,
    # and leave every other pair as it was. F(2,3) (d = 2: taps two rows apart) also
    # needs its middle tap, which none of its four products' matrices is; F(2,7) (three
    # blocks, 3 + 2 + 2) the middle tap of its F(2,3) block.
    e = {"F22": 1, "F23": 2, "F27": 1}[form]
    spec = {"F22": lambda: make(2, 12, 20, 24, 24, 4, 2, 1, "SAME", layout),
            "F23": lambda: make(2, 12, 20, 12, 24, 3, 1, 2, "SAME", layout),
            "F27": lambda: make(2, 12, 20, 12, 24, 7, 1, 1, "SAME", layout)}[form]()
    x, f = random_arrays(spec)
    f = np.abs(f) * 0.01  # one sign: an Inf input gives Inf, not NaN, in the direct sum
    nwc = x if layout == "NWC" else x.transpose(0, 2, 1)  # a view: writes go to x
    if special == "nonfinite":
        nwc[0, 3, 5], nwc[1, 8, 0], nwc[1, 0, 19] = np.inf, np.nan, -np.inf
    else:
        nwc[0, 4, :], nwc[0, 4 + e, :], nwc[1, 11, 7] = 3e38, -3e38, 3e38
    exact = None
    # One plan of each loop order: in "rows" the transform (NWC: and the padding) is
    # computed per tile, in "filters" as a pass; the fix reads the input itself in both.
    plans = winograd_plans(spec)
    for cpu_plan in [next(p for p in reversed(plans) if p.order == order)
                     for order in ("rows", "filters")]:
        y = run_plan(spec, cpu_plan, x, f)
        error, ok = max_error(y, x, f, spec)
        assert ok, (cpu_plan, error)
        exact = y if exact is None else exact
    if special == "nonfinite":
        assert np.isinf(exact).any()  # TF's Inf, which the transform alone makes NaN


def test_winograd_form_applies_where_every_phase_has_two_adjacent_taps():
    from conv1d_transpose.compile.kernels import winograd

    def applies(*case):
        return winograd.applies(Geometry.from_spec(make(*case)))

    assert applies(1, 8, 4, 16, 4, 4, 2, 1, "SAME", "NWC")  # K = 2s
    assert applies(1, 8, 4, 9, 4, 2, 1, 1, "VALID", "NWC")  # s = 1, K = 2
    assert not applies(1, 8, 4, 16, 4, 3, 2, 1, "SAME", "NWC")  # phases with 2 and 1 taps
    assert applies(1, 8, 4, 16, 4, 6, 2, 1, "SAME", "NWC")  # 3 taps per phase: F(2,3)
    assert applies(1, 8, 4, 8, 4, 3, 1, 2, "SAME", "NWC")  # s = 1, d = 2: rows 2 apart
    assert applies(1, 8, 4, 16, 4, 8, 2, 1, "SAME", "NWC")  # 4 taps per phase: 2 x F(2,2)
    assert applies(1, 8, 4, 8, 4, 11, 1, 5, "SAME", "NWC")  # K 11, d 5: 3 x F(2,3) + F(2,2)
    assert not applies(1, 8, 4, 8, 4, 17, 1, 1, "SAME", "NWC")  # past MAX_TAPS
    assert not applies(1, 8, 4, 16, 4, 5, 2, 2, "SAME", "NWC")  # d = 2, s = 2: one phase idle
    assert not applies(1, 8, 4, 24, 4, 4, 2, 3, "VALID", "NWC")  # phases shifted apart
    assert applies(1, 8, 4, 16, 4, 4, 2, 1, "SAME", "NCW")
    symbolic = dataclasses.replace(Geometry.from_spec(make(1, 8, 4, 16, 4, 4, 2, 1, "SAME",
                                                           "NWC")), batch=None)
    assert not winograd.applies(symbolic)  # a symbolic batch (e.g. an ONNX dim_param)


def test_plan_rule_takes_winograd_where_it_saves_more_than_it_costs():
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    cpu = CpuTarget(512, 32, 2, 1 << 20)

    def rule(*case):
        return schedule_cpu.plan(Geometry.from_spec(make(*case)), cpu).winograd

    assert rule(1, 200, 512, 1600, 256, 16, 8, 1, "SAME", "NWC")  # hifigan-up1
    assert rule(1, 1600, 256, 12800, 128, 16, 8, 1, "SAME", "NCW")  # ncw-up2
    assert rule(4, 500, 128, 2000, 64, 8, 4, 1, "SAME", "NWC")  # 128 channels, input in cache
    assert rule(1, 4000, 128, 4000, 128, 3, 1, 4, "SAME", "NWC")  # dilated: F(2,3)
    # Out of cache: in the "rows" order each tile transforms its own input (128
    # channels: hifigan-up3), but not with 64 channels (hifigan-up4), nor in the
    # "filters" order, whose transform is a pass over the whole input.
    assert rule(1, 12800, 128, 25600, 64, 4, 2, 1, "SAME", "NWC")
    assert not rule(1, 25600, 64, 51200, 32, 4, 2, 1, "SAME", "NWC")
    assert not rule(1, 12800, 128, 102400, 128, 16, 8, 1, "SAME", "NWC")
    assert not rule(1, 10, 64, 80, 64, 16, 8, 1, "SAME", "NWC")  # 10 MFLOP: launches cost more
    # Up to 32 MB of F(2,r) filters (streamed every call beyond that), blocked or not;
    # past it, F(2,2) blocked with G1 and G0 alone, which streams the direct form's bytes.
    assert rule(1, 64, 2048, 260, 1024, 8, 4, 1, "VALID", "NWC")  # demucs-dec1: 96 MB
    assert rule(1, 64, 2048, 260, 512, 8, 4, 1, "VALID", "NWC")  # 48 MB
    assert rule(1, 128, 1024, 516, 512, 8, 4, 1, "VALID", "NWC")  # 24 MB, blocked direct
    assert rule(1, 200, 1024, 1600, 256, 16, 8, 1, "SAME", "NWC")  # 24 MB
    assert rule(1, 64, 2048, 260, 1024, 8, 4, 1, "VALID", "NCW")
    assert not rule(1, 200, 512, 1600, 256, 15, 8, 1, "SAME", "NWC")  # K != 2s
    # F(2,3) has no two-slot form: past the cap (5/3 of the direct form's bytes), direct.
    assert not rule(1, 64, 2048, 66, 1024, 3, 1, 1, "VALID", "NWC")


def test_ncw_direct_plan_takes_one_vector_unless_even_four_need_a_blocked_reduction():
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    cpu = CpuTarget(512, 32, 2, 1 << 20)

    def direct(*case):
        return schedule_cpu.plan(Geometry.from_spec(make(*case)), cpu, winograd=False)

    narrow = direct(1, 1600, 256, 12800, 128, 16, 8, 1, "SAME", "NCW")  # ncw-up2
    assert narrow.tiling.out_tile == 16 and not narrow.blocked
    wide = direct(1, 64, 2048, 260, 1024, 8, 4, 1, "VALID", "NCW")  # demucs-dec1 in NCW
    assert wide.tiling.out_tile == 64 and wide.blocked and wide.prefetch
    assert wide.phases_inner


def test_ncw_winograd_plan_takes_a_wide_tile_only_where_it_divides_the_channels():
    # The F(2,r) kernel writes an NWC copy of an NCW output, so it can use NWC's wide
    # tile, but a 64-wide tile on 80 channels computes 48 padding channels.
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    cpu = CpuTarget(512, 32, 2, 1 << 20)

    def tile(*case):
        cpu_plan = schedule_cpu.plan(Geometry.from_spec(make(*case)), cpu)
        assert cpu_plan.winograd
        return cpu_plan.tiling.out_tile

    assert tile(1, 1600, 256, 12800, 128, 16, 8, 1, "SAME", "NCW") == 64  # ncw-up2
    assert tile(2, 600, 160, 3000, 80, 10, 5, 1, "SAME", "NCW") == 16  # ncw-s5-k10
    assert tile(2, 600, 160, 3000, 96, 10, 5, 1, "SAME", "NCW") == 32


def direct_and_winograd_filters(*case):
    """The direct and the Winograd packed filters of one layer, same tiling."""
    spec = make(*case)
    _, f = random_arrays(spec)
    geometry = Geometry.from_spec(spec)
    tiling = Tiling(rows=2, out_tile=4, in_tile=3)
    layout = plan_layout(geometry, tiling, winograd=True)
    packed = pack_filters(f, layout)
    assert packed.shape == layout.filters_shape
    return pack_filters(f, plan_layout(geometry, tiling)), packed


def test_winograd_filters_are_g1_g0_plus_g1_and_g0():
    direct, packed = direct_and_winograd_filters(1, 5, 3, 10, 5, 4, 2, 1, "SAME", "NWC")
    assert packed.shape == direct.shape[:1] + (3,) + direct.shape[2:]
    g0, g1 = direct[:, 0], direct[:, 1]
    np.testing.assert_array_equal(packed[:, 0], g1)
    np.testing.assert_array_equal(packed[:, 2], g0)
    np.testing.assert_allclose(packed[:, 1], g0 + g1, rtol=1e-6)


def test_summed_winograd_filters_are_g1_and_g0_alone():
    # A blocked F(2,2) plan streams only the direct taps; the kernel sums the middle
    # product's G0 + G1 in registers.
    spec = make(1, 5, 3, 10, 5, 4, 2, 1, "SAME", "NWC")
    _, f = random_arrays(spec)
    geometry, tiling = Geometry.from_spec(spec), Tiling(rows=2, out_tile=4, in_tile=3)
    layout = plan_layout(geometry, tiling, winograd=True, summed_filters=True)
    packed = pack_filters(f, layout)
    direct = pack_filters(f, plan_layout(geometry, tiling))
    assert packed.shape == layout.filters_shape == direct.shape
    np.testing.assert_array_equal(packed[:, 0], direct[:, 1])
    np.testing.assert_array_equal(packed[:, 1], direct[:, 0])
    # Only F(2,2) has the form: F(2,3) keeps its five slots.
    f23 = plan_layout(Geometry.from_spec(make(1, 8, 3, 8, 5, 3, 1, 2, "SAME", "NWC")),
                      tiling, winograd=True, summed_filters=True)
    assert not f23.summed_filters and f23.filters_shape[1] == 5


@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
def test_summed_filters_give_the_same_bits_as_stored_sums(data_format, monkeypatch):
    # G0 + G1 summed in float32 registers is rounded once from the exact sum, as the
    # packed sum (computed in float64, then rounded) is: the kernels agree bit for bit.
    from conv1d_transpose.compile.kernels import schedule_cpu_winograd
    from conv1d_transpose.compile.kernels.forms import build_primfunc
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    monkeypatch.setattr(schedule_cpu, "WINOGRAD_FILTER_BYTES", 0)  # as in the blocked tests
    spec = make(1, 40, 97, 164, 64, 8, 4, 1, "VALID", data_format)
    geometry, target = Geometry.from_spec(spec), host_target()
    x, f = random_arrays(spec)
    cpu_plan = schedule_cpu.plan(geometry, CpuTarget(512, 32, 2, 64 << 10), winograd=True,
                                 order="filters", phases_in_tile=False)
    assert cpu_plan.blocked
    outputs = []
    for summed in (False, True):
        layout = plan_layout(geometry, cpu_plan.tiling, True, cpu_plan.phase_major,
                             summed_filters=summed)
        assert layout.summed_filters == summed
        func = schedule_cpu_winograd.schedule(build_primfunc(layout), layout, cpu_plan)
        if summed:
            # Summed one reduction block at a time (an L1-sized buffer the chunk's tiles
            # share), inside the loop over the blocks, not as a pass over all filters.
            sch = tvm.s_tir.Schedule(func)
            extents = [int(sch.get(loop).extent)
                       for loop in sch.get_loops(sch.get_sblock("sum_filters"))]
            # [..., block of the reduction, channel, vectors of lanes, lane]
            blocks = layout.in_channels // cpu_plan.tiling.in_tile
            assert blocks > 1 and extents[-4] == blocks
            assert np.prod(extents[-3:]) == cpu_plan.tiling.in_tile * cpu_plan.tiling.out_tile
        lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=target).jit()
        args = [tvm.runtime.tensor(x), tvm.runtime.tensor(pack_filters(f, layout)),
                tvm.runtime.empty(spec.output_shape, spec.dtype)]
        lib["main"](*args)
        outputs.append(args[2].numpy())
    assert max_error(outputs[1], x, f, spec)[1]
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_winograd_f23_filters_are_its_four_products_then_the_middle_tap():
    direct, packed = direct_and_winograd_filters(1, 8, 3, 8, 5, 3, 1, 2, "SAME", "NWC")
    assert packed.shape == direct.shape[:1] + (5,) + direct.shape[2:]
    g0, g1, g2 = direct[:, 0], direct[:, 1], direct[:, 2]  # taps reading rows q+c, -e, -2e
    np.testing.assert_array_equal(packed[:, 0], g2)
    np.testing.assert_allclose(packed[:, 1], (g0 + g1 + g2) / 2, rtol=1e-6)
    np.testing.assert_allclose(packed[:, 2], (g0 - g1 + g2) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(packed[:, 3], g0)
    np.testing.assert_array_equal(packed[:, 4], g1)


def test_packed_filters_hold_every_tap_once():
    spec = make(1, 5, 3, 14, 5, 5, 3, 1, "SAME", "NWC")
    _, f = random_arrays(spec)
    layout = plan_layout(Geometry.from_spec(spec), Tiling(rows=2, out_tile=4, in_tile=2))
    packed = pack_filters(f, layout)
    assert packed.shape == layout.filters_shape
    assert np.isclose(np.abs(packed).sum(), np.abs(f).sum(), rtol=1e-5)


def test_phase_major_filters_put_each_phases_taps_in_one_contiguous_panel():
    spec = make(1, 5, 3, 14, 6, 5, 3, 1, "SAME", "NWC")
    _, f = random_arrays(spec)
    geometry = Geometry.from_spec(spec)
    layout = plan_layout(geometry, Tiling(rows=2, out_tile=4, in_tile=2), phase_major=True)
    packed = pack_filters(f, layout)
    assert packed.shape == layout.filters_shape == (2, 3, 2, 4, 4)  # [block, s, taps, in, 4]
    dec = decompose(geometry)
    for p in dec.active:
        for j in range(p.taps):
            k = p.first_tap + j * dec.tap_step
            for co in range(6):
                np.testing.assert_array_equal(packed[co // 4, p.r, j, :3, co % 4], f[k, co])
    # Padding channels are zero (3 of the 4 input channels are real, 6 of 8 outputs).
    assert not packed[..., 3, :].any() and not packed[1, ..., 2:].any()


@pytest.mark.parametrize("name", ["filters-blocked", "filters", "filters-ncw-direct",
                                  "rows-two-channel-blocks", "rows-phases-in-tile"])
def test_both_filter_packings_match_reference(name):
    # The rule packs filters by phase for tiles of one phase; records tuned before that
    # keep the interleaved packing, so both must stay right in every loop order and form.
    spec = make(*SCHEDULES[name][0])
    x, f = random_arrays(spec)
    cpu_plan = schedule_cpu.plan(Geometry.from_spec(spec),
                                 schedule_cpu.describe_target(host_target()))
    assert cpu_plan.phase_major == (not cpu_plan.phases_in_tile)
    for phase_major in (True, False):
        variant = dataclasses.replace(cpu_plan, phase_major=phase_major)
        error, ok = max_error(run_plan(spec, variant, x, f), x, f, spec)
        assert ok, (variant, error)


def prefetched_lines(func, layout):
    """{(filter block, tap, reduction block running): {(phase, input channel, lane)}}
    that the prefetch loops of a blocked kernel touch, every enclosing loop enumerated
    and the index arithmetic evaluated (not read back from the code under test). The
    loops above a prefetch are [..., reduction block, tile of rows, tap, line]."""
    from tvm import s_tir, sym, tirx

    found = []

    def walk(stmt, loops):
        if isinstance(stmt, tirx.For):
            if stmt.loop_var.name == "line":
                found.append((loops + [stmt], stmt.body))
            else:
                walk(stmt.body, loops + [stmt])
        elif isinstance(stmt, tirx.SeqStmt):
            for item in stmt.seq:
                walk(item, loops)
        elif isinstance(stmt, s_tir.SBlockRealize):
            walk(stmt.block, loops)
        elif isinstance(stmt, s_tir.SBlock):
            walk(stmt.body, loops)

    walk(func.body, [])
    names = (("block", "phase", "tap", "channel", "lane") if layout.phase_major
             else ("block", "tap", "channel", "phase", "lane"))
    touched = {}
    for loops, body in found:
        call = body.value if isinstance(body, tirx.Evaluate) else body
        indices = call.args[1].args[0].indices
        for values in itertools.product(*(range(int(loop.extent)) for loop in loops)):
            analyzer = sym.Analyzer()
            for loop, value in zip(loops, values):
                analyzer.bind(loop.loop_var, tirx.const(value, "int32"))
            at = dict(zip(names, (int(analyzer.simplify(i)) for i in indices)))
            touched.setdefault((at["block"], at["tap"], values[-4]), set()).add(
                (at["phase"], at["channel"], at["lane"]))
    return touched


@pytest.mark.parametrize("case, keywords", [
    # Tiles of one phase, filters packed by phase.
    (SCHEDULES["filters-blocked"][0], {}),
    # NCW, phases inner, rows in chunks.
    ((1, 9, 2400, 40, 64, 8, 4, 1, "VALID", "NCW"), {}),
    # One vector by every phase (interleaved packing).
    ((1, 9, 2400, 40, 64, 8, 4, 1, "VALID", "NCW"), {"vectors": 1, "phases_in_tile": True}),
    # F(2,2): the taps are its three products (demucs-dec1's tuned form).
    ((1, 40, 600, 164, 64, 8, 4, 1, "VALID", "NWC"), {"winograd": True}),
], ids=["nwc", "ncw", "ncw-phases-in-tile", "winograd"])
def test_blocked_plans_prefetch_exactly_the_next_block_of_filters(case, keywords,
                                                                 monkeypatch):
    # Each tile's pass over a tap prefetches its share of that tap's next reduction
    # block; together the tiles cover all of it (a wrong index would only cost speed,
    # which no result would show). (No cap: the Winograd case's filters are small.)
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    monkeypatch.setattr(schedule_cpu, "WINOGRAD_FILTER_BYTES", 0)

    spec = make(*case)
    geometry, target = Geometry.from_spec(spec), host_target()
    winograd = keywords.pop("winograd", False)
    # The AVX-512 plan on any host: only its TIR is read here.
    cpu_plan = schedule_cpu.plan(geometry, CpuTarget(512, 32, 2, 1 << 20), winograd=winograd,
                                 **keywords)
    assert cpu_plan.blocked and cpu_plan.prefetch and cpu_plan.winograd == winograd
    assert cpu_plan.phase_major == (not cpu_plan.phases_in_tile)
    assert cpu_plan.phases_in_tile == bool(keywords)
    func, layout = schedule_cpu.build(geometry, target, cpu_plan)
    in_tile, out_tile = layout.tiling.in_tile, layout.tiling.out_tile
    blocks = layout.in_channels // in_tile
    # Several tiles share each block.
    assert blocks > 2 and (cpu_plan.chunk_tiles > 1 if winograd
                           else layout.padded_rows > layout.tiling.rows)
    touched = prefetched_lines(func, layout)
    dec = decompose(geometry)
    # F(2,2) blocked packs G1 and G0 alone (summed filters): each of its three products'
    # passes prefetches a slot it reads, and between them they cover both.
    assert layout.summed_filters == winograd
    taps = dec.active[0].taps
    assert set(touched) == {(b, j, running) for b in range(layout.out_blocks)
                            for j in range(taps) for running in range(blocks)}
    for (_, _, running), lines in touched.items():
        following = (running + 1) % blocks
        assert lines == {(p.r, following * in_tile + c, lane) for p in dec.active
                         for c in range(in_tile) for lane in range(0, out_tile, 16)}


@pytest.mark.parametrize("case, winograd", [
    (SCHEDULES["filters-blocked"][0], False),
    ((1, 9, 2400, 40, 64, 8, 4, 1, "VALID", "NCW"), False),
    ((1, 40, 600, 164, 64, 8, 4, 1, "VALID", "NWC"), True),
], ids=["nwc", "ncw", "winograd"])
def test_blocked_plans_keep_their_input_by_channel_block(case, winograd, monkeypatch):
    # The scratch input that a blocked reduction reads (the padded input, or F(2,r)'s
    # transformed one) is laid out channel block first and channel last, so a tile's
    # pass over one block reads a run of lines, not short pieces a whole row of channels
    # apart (docs/design/cpu-kernels.md, "The polyphase kernel"; measured in
    # docs/results/cpu-history.md). Only speed would show a regression, so the layout is
    # read off the scheduled kernel.
    import re
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    monkeypatch.setattr(schedule_cpu, "WINOGRAD_FILTER_BYTES", 0)
    geometry = Geometry.from_spec(make(*case))
    cpu_plan = schedule_cpu.plan(geometry, CpuTarget(512, 32, 2, 1 << 20), winograd=winograd)
    assert cpu_plan.blocked and cpu_plan.winograd == winograd
    func, layout = schedule_cpu.build(geometry, host_target(), cpu_plan)
    shapes_by_name = {name: [int(d) for d in shape.split(",") if d.strip()] for name, shape
                      in re.findall(r"(\w+) = T\.sblock_alloc_buffer\(\(([^)]*)\)", func.script())}
    in_tile, rows = layout.tiling.in_tile, layout.tiling.rows
    blocks = layout.in_channels // in_tile
    assert blocks > 2
    if winograd:
        pairs = -(-decompose(geometry).rows // (2 * rows)) * rows
        # [n, channel block, tile, product, row of the tile, channel]
        assert shapes_by_name["xw"] == [1, blocks, pairs // rows, 3, rows, in_tile]
    else:
        padded = shapes_by_name["xp"]
        assert padded[:2] == [1, blocks] and padded[3] == in_tile and padded[2] > rows


# The host's direct plan by default (~27 s); the other three (~85 s) in the slow run.
@pytest.mark.parametrize("winograd", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["direct", "winograd"])
@pytest.mark.parametrize("arch", ["host", pytest.param("aarch64", marks=pytest.mark.slow)])
def test_prefetch_reaches_the_machine_code_of_a_blocked_plan_only(arch, winograd,
                                                                 monkeypatch):
    # x86: prefetcht1 (locality 2: into L2); aarch64: prfm pldl2keep.
    # (2400 input channels: a panel beyond L2 with AVX2's tiles too; no cap on the
    # Winograd filters, so that they block.)
    monkeypatch.setattr(schedule_cpu, "WINOGRAD_FILTER_BYTES", 0)
    target, instruction = ((host_target(), "prefetcht1") if arch == "host" else
                           (tvm.target.Target(AARCH64), "prfm\tpldl2keep"))
    cin = 2400
    spec = make(1, 9, cin, 40, 64, 8, 4, 1, "VALID", "NWC")
    geometry = Geometry.from_spec(spec)
    blocked = schedule_cpu.plan(geometry, schedule_cpu.describe_target(target),
                                winograd=winograd)
    assert blocked.winograd == winograd
    assert blocked.blocked and blocked.prefetch
    unblocked = dataclasses.replace(blocked, blocked=False, chunk_tiles=0,
                                    tiling=dataclasses.replace(blocked.tiling, in_tile=cin))
    for cpu_plan, expected in ((blocked, True), (unblocked, False)):
        func, _ = schedule_cpu.build(geometry, target, cpu_plan)
        asm = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=target).mod.inspect_source("asm")
        assert (instruction in asm) == expected, arch


@pytest.mark.parametrize("case", [
    (1, 40, 97, 164, 64, 8, 4, 1, "VALID", "NWC"),  # F(2,2); 97 channels: a padded block
    (2, 40, 97, 164, 40, 8, 4, 1, "VALID", "NCW"),  # NCW, batch 2, padded output channels
    (1, 40, 72, 40, 20, 3, 1, 4, "SAME", "NWC"),  # F(2,3), pairs of rows 4 apart
], ids=["F22-nwc", "F22-ncw", "F23"])
def test_blocked_winograd_plans_match_reference(case, monkeypatch):
    # A Winograd panel beyond L2 (here a 64 KiB L2 and no cap on the filters the generic
    # plan streams, so that small shapes block) runs its reduction in blocks, a chunk of
    # tiles' accumulators kept across them, as demucs-dec1 does on a real L2; the input's
    # Inf must still come out as TensorFlow's.
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    monkeypatch.setattr(schedule_cpu, "WINOGRAD_FILTER_BYTES", 0)

    spec = make(*case)
    geometry = Geometry.from_spec(spec)
    x, f = random_arrays(spec)
    nwc = x if spec.data_format == "NWC" else x.transpose(0, 2, 1)
    nwc[0, 5, 3] = np.inf
    f = np.abs(f)  # one sign: the Inf input gives Inf, not NaN, in the direct sum
    small_l2 = CpuTarget(512, 32, 2, 64 << 10)
    for rows in (None, 2):
        cpu_plan = schedule_cpu.plan(geometry, small_l2, winograd=True, rows=rows,
                                     order="filters", phases_in_tile=False)
        assert cpu_plan.blocked and cpu_plan.prefetch
        assert cpu_plan.tiling.in_tile < geometry.in_channels
        y = run_plan(spec, cpu_plan, x, f)
        error, ok = max_error(y, x, f, spec)
        assert ok, (cpu_plan, error)
        assert np.isinf(y).any()


def test_plan_blocks_a_winograd_panel_beyond_l2_in_blocks_of_16_kib():
    # demucs-dec1 with an AVX-512 tile of 11 pairs by two vectors: F(2,2)'s three
    # products by 32 channels by 2048 input channels is a 768 KiB panel a phase, beyond a
    # quarter of the 1 MiB of L2 the description assumes; blocks of 32 input channels
    # (3 x 32 x 32 floats: 12 KiB), the 33 pairs of a phase in one chunk of three tiles.
    # The untuned rule takes it blocked with BLOCKED_WINOGRAD_PAIRS pairs by four vectors
    # (16 channels a block: 3 x 16 x 64 floats). hifigan-up1 with 1024 input channels has
    # a panel as large (768 KiB with its 6 x 4 tile), but 24 MiB of filters, within the
    # cap: not blocked.
    from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

    emerald = CpuTarget(512, 32, 2)
    demucs = Geometry.from_spec(make(1, 64, 2048, 260, 1024, 8, 4, 1, "VALID", "NWC"))
    tuned = schedule_cpu.plan(demucs, emerald, winograd=True, vectors=2, rows=11)
    assert (tuned.blocked, tuned.prefetch, tuned.tiling.in_tile, tuned.chunk_tiles) == \
        (True, True, 32, 3)
    rule = schedule_cpu.plan(demucs, emerald)
    assert rule.winograd and rule.blocked and rule.prefetch
    assert (rule.tiling.rows, rule.tiling.out_tile, rule.tiling.in_tile, rule.chunk_tiles) == \
        (schedule_cpu.BLOCKED_WINOGRAD_PAIRS, 64, 16, 11)
    up1 = Geometry.from_spec(make(1, 200, 1024, 1600, 256, 16, 8, 1, "SAME", "NWC"))
    rule = schedule_cpu.plan(up1, emerald)
    assert rule.winograd and not rule.blocked and rule.tiling.in_tile == 1024


def test_records_without_a_prefetch_key_run_without_prefetch():
    from conv1d_transpose.compile import records

    saved = records.plan_to_dict(schedule_cpu.CpuPlan(Tiling(6, 64, 256), False, "filters",
                                                      blocked=True, prefetch=True))
    del saved["prefetch"]
    assert records.plan_from_dict(saved).prefetch is False


def test_records_without_a_packing_key_keep_the_interleaved_packing():
    from conv1d_transpose.compile import records

    saved = records.plan_to_dict(schedule_cpu.CpuPlan(Tiling(6, 64, 256), False, "filters"))
    del saved["phase_major"]
    assert records.plan_from_dict(saved).phase_major is False


@pytest.mark.parametrize("cout, vectors", [(96, 3), (80, 3), (128, 4), (50, 4), (48, 3),
                                           (32, 2), (16, 1), (1024, 4)])
def test_plan_rule_pads_the_fewest_output_channels(cout, vectors):
    spec = make(1, 200, 64, 400, cout, 4, 2, 1, "SAME", "NWC")
    avx512 = schedule_cpu.CpuTarget(512, 32, 2)
    plan = schedule_cpu.plan(Geometry.from_spec(spec), avx512, winograd=False)
    assert plan.tiling.out_tile == 16 * vectors
    # AVX2 (two 8-lane vectors at most) keeps its widest tile.
    avx2 = schedule_cpu.plan(Geometry.from_spec(spec), schedule_cpu.CpuTarget(256, 16, 2),
                             winograd=False)
    assert avx2.tiling.out_tile == (8 if cout <= 8 else 16)


@pytest.mark.parametrize("cores, order", [(2, "filters"), (3, "rows"), (4, "rows")])
def test_plan_rule_takes_filter_panels_only_where_they_share_evenly_over_the_cores(cores,
                                                                                  order):
    # stride3-k7-valid: a launch per phase (taps 3, 2, 2), two 48-channel panels each.
    spec = make(1, 1000, 192, 3004, 96, 7, 3, 1, "VALID", "NWC")
    plan = schedule_cpu.plan(Geometry.from_spec(spec), schedule_cpu.CpuTarget(512, 32, cores))
    assert (plan.order, plan.tiling.out_tile) == (order, 48)
