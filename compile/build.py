"""Relax module + target entry -> compiled executable -> exported shared library.

CUDA (measured, TVM 0.27.0.post1, no GPU driver on the build machine): TVM's CUDA codegen
hands the kernels' CUDA C *source* to the CUDA runtime's module factory, which would JIT
it through `tvm_callback_cuda_compile` (NVRTC by default, nvcc with
TVM_CUDA_COMPILE_MODE=nvcc) when the module is created. Where libtvm_runtime_cuda.so cannot
load (no libcuda.so.1) the codegen makes a "CUDA fallback module" instead, which keeps
the source and saves it with format "cuda": the callback is never called at build time,
so neither TVM_CUDA_COMPILE_MODE nor a registered callback changes what is exported, and
the receiving GPU machine would need NVRTC (or nvcc) and Python to compile it on load.
So when nvcc is here we compile that source ourselves (`nvcc --fatbin` for the target's
sm_XX, plus its PTX) and put the fatbin in the exported library in place of the source,
in the serialized CUDA module's own format ([fmt][function map][code]), which the CUDA
runtime loads with cuModuleLoadData, no compiler needed on the GPU machine.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import struct
import subprocess
import tempfile

from ..graph.errors import BackendError
from .targets import TargetEntry

LIBRARY_NAME = "lib.so"

# No --use_fast_math (TVM's own nvcc path adds it): this project promises TF's numerics.
NVCC_FLAGS = ("--fatbin", "-O3", "-w",
              "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda")

_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_KINDS = {1: "ptx", 2: "elf"}


@dataclasses.dataclass
class BuildResult:
    """A compiled Relax VM executable and what produced it."""

    executable: object  # tvm.relax.VMExecutable
    entry: TargetEntry
    target: object  # tvm.target.Target
    scheduled: bool
    options: dict
    # Constants lifted out of `main` (see compile/params.py): its trailing parameters.
    params: list = dataclasses.field(default_factory=list)


def build(mod, target_entry: TargetEntry) -> BuildResult:
    """Compile a Relax module (from `importer.import_onnx`) for `target_entry`.

    The fast-kernel lowering (`lowering.apply`) runs first and says whether every
    conv1d_transpose got a scheduled kernel; that flag goes into the manifest. Then the
    large constants of `main` (the packed filters) become its trailing parameters, whose
    values the artifact keeps outside the library (compile/params.py).
    """
    import tvm
    from tvm import relax

    from .elementwise import fuse as fuse_elementwise
    from .lowering import apply as lower_kernels
    from .params import lift_constants

    target = target_entry.tvm_target()
    mod, scheduled = lower_kernels(mod, target)
    mod, params = lift_constants(mod)
    # A model segment may carry Tanh and Exp next to our kernel (runtime/placement.py
    # keeps vocoders' activations on TVM): TVM lowers them to a scalar libm call per
    # element (Tanh on 128 x 3200 floats: 2.0 ms against onnxruntime's 0.077), its fast
    # forms to vectorized polynomials (0.153 ms, abs error 3e-7: onnxruntime's own;
    # tools/models/elementwise_ops.py, Zen 4, 2026-12-06).
    mod = relax.transform.FastMathTransform()(mod)
    options = {"relax_pipeline": "default", "fast_math": ["exp", "tanh", "erf"]}
    pipeline = "default"
    if target_entry.family == "cpu":
        # One pass over memory per chain of elementwise ops (compile/elementwise.py).
        mod = fuse_elementwise(mod, target)
        options["elementwise"] = "fused, inlined, parallel (compile/elementwise.py)"
    if target_entry.family == "cuda":
        # Kernels without thread bindings fail TVM's memory verification on a GPU target:
        # the CUDA pipeline schedules every TIR function with tvm.s_tir.dlight's default
        # GPU rules (Matmul, GEMV, Reduction, GeneralReduction, Fallback) and leaves
        # functions already marked scheduled (the lowering's kernels) alone. tvm.compile
        # picks it for "gpu" targets by itself; naming it keeps that explicit.
        pipeline = relax.get_default_pipeline(target)
        options["relax_pipeline"] = "cuda-default (tvm.s_tir.dlight gpu rules)"
    if target_entry.family == "cpu" and _symbolic_kernels(mod):
        executable = _compile_kernels_apart(mod, target, pipeline)
        options["kernels"] = "symbolic-width kernels in an LLVM module of their own"
    else:
        executable = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    return BuildResult(executable=executable, entry=target_entry, target=target,
                       scheduled=bool(scheduled), options=options, params=params)


def _symbolic_kernels(mod) -> bool:
    return any(_is_symbolic_kernel(f) for _, f in mod.functions_items())


def _is_symbolic_kernel(func) -> bool:
    """Whether `func` is one of our kernels for every input width, in any form (the
    polyphase kernel's "symbolic-width", the width form's "symbolic-width:width")."""
    from tvm import tirx

    from .lowering import SYMBOLIC_WIDTH

    if not isinstance(func, tirx.PrimFunc) or func.attrs is None:
        return False
    return str(func.attrs.get("conv1d_transpose.schedule", "")).startswith(SYMBOLIC_WIDTH)


def _compile_kernels_apart(mod, target, pipeline):
    """`tvm.compile(mod, target, relax_pipeline=pipeline)`, but with our symbolic-width
    kernels compiled as an LLVM module of their own, imported into the rest.

    Why: a model with a free width has Relax shape functions (`time * 8` after an
    upsampler), and in one LLVM module with them TVM 0.27's CPU codegen gives a kernel
    no separate compute function, so its buffers lose `noalias` and LLVM keeps the
    filter loads in the reduction: HiFi-GAN's 128-channel K=11 d=3 layer at width 3200
    ran 9.2 ms against 4.3 ms compiled alone (Zen 4, 2026-12-06; its TIR identical
    through every pass). The VM finds the kernels in the imported module by name."""
    import tvm
    from tvm import relax, tirx
    from tvm.relax import vm_build

    if isinstance(pipeline, str):
        pipeline = relax.get_pipeline(pipeline)
    with target:
        mod = pipeline(mod)
    attrs = dict(mod.attrs) if mod.attrs else {}
    if attrs.get("external_mods"):
        raise ValueError("external modules are not expected in a CPU build")
    params = dict(attrs.get("const_name_to_constant", {}))
    builder = relax.ExecBuilder()
    mod = vm_build._vmcodegen(builder, mod, "bytecode")
    kernels, rest = {}, {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            (kernels if _is_symbolic_kernel(func) else rest)[gv] = func
    lib = tvm.tirx.build(tvm.IRModule(rest, attrs=mod.attrs), target=target,
                         pipeline="default")
    lib.import_module(tvm.tirx.build(tvm.IRModule(kernels), target=target,
                                     pipeline="default"))
    return relax.VMExecutable(vm_build._ffi_api.VMLink(builder, target, lib, [], params))


def export_library(result: BuildResult, directory: str) -> dict:
    """Write `result` as `directory/lib.so`; returns what the manifest records about it.

    Returns:
      {"library": file name, "linker": what linked it, "device_code": None or
      {"format", "archs", "sha256"} of the CUDA code carried, "options": export options}.
    Raises:
      BackendError: a cross compiler or nvcc that the target needs fails or is missing.
    """
    from tvm.support import cc

    entry = result.entry
    path = os.path.join(directory, LIBRARY_NAME)
    kwargs = {}
    linker = os.path.basename(cc.get_cc() or "cc")
    if entry.is_cross:
        if not entry.cross_compiler or not shutil.which(entry.cross_compiler):
            raise BackendError(f"target {entry.name!r}: cannot link {entry.machine} code: "
                               f"{entry.cross_compiler or 'no cross_compiler'} not found"
                               f"{install_hint(entry.cross_compiler)}")
        kwargs["fcompile"] = cc.cross_compiler(entry.cross_compiler)
        linker = entry.cross_compiler
    info = {"library": LIBRARY_NAME, "linker": linker, "device_code": None, "options": {}}
    if entry.family == "cuda":
        modules = _cuda_modules(result.executable)
        formats = [_cuda_module_format(m) for m in modules]
        sources = [m.inspect_source("cuda") for m, f in zip(modules, formats) if f == "cuda"]
        if not sources:
            # Built where TVM's CUDA runtime loads (a GPU machine): TVM compiled the kernels
            # itself (NVRTC cubin by default) for the target's arch. Export them as they are.
            info["device_code"] = {"format": "+".join(sorted(set(formats))),
                                   "archs": [entry.cuda_arch], "kinds": ["tvm"], "bytes": None}
        elif shutil.which("nvcc"):
            fatbins = [compile_fatbin(source, entry.cuda_arch) for source in sources]
            kwargs["fpack_imports"] = _packer(dict(zip(sources, fatbins)))
            entries = [e for fatbin in fatbins for e in fatbin_entries(fatbin)]
            info["device_code"] = {
                "format": "fatbin",
                "archs": sorted({arch for _, arch in entries}),
                "kinds": sorted({kind for kind, _ in entries}),
                "bytes": sum(len(f) for f in fatbins),
            }
            info["options"]["nvcc"] = [*NVCC_FLAGS, *_gencode(entry.cuda_arch)]
        else:
            # The library carries the CUDA C source; the GPU machine's TVM compiles it on load.
            info["device_code"] = {"format": "cuda-source", "archs": [entry.cuda_arch],
                                   "kinds": ["source"], "bytes": sum(len(s) for s in sources)}
    with tempfile.TemporaryDirectory(dir=directory, prefix=".export-") as workspace:
        try:
            result.executable.export_library(path, workspace_dir=workspace, **kwargs)
        except RuntimeError as error:
            raise BackendError(f"target {entry.name!r}: linking {LIBRARY_NAME} with {linker} "
                               f"failed: {error}") from None
    return info


def install_hint(compiler: str | None) -> str:
    """Where a GNU cross compiler comes from, e.g. for 'aarch64-linux-gnu-gcc':
    ' (Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu)'; '' for other names."""
    match = re.fullmatch(r"([a-z0-9_]+(?:-[a-z0-9_]+)*-linux-gnu[a-z0-9]*)-(gcc|g\+\+)",
                         compiler or "")
    if not match:
        return ""
    return f" (Debian/Ubuntu: apt-get install {match.group(2)}-{match.group(1)})"


def _cuda_modules(executable) -> list:
    return list(executable.mod._collect_from_import_tree(lambda m: m.kind == "cuda"))


def _cuda_module_format(module) -> str:
    """'cuda' for a module that still holds CUDA C source (TVM's fallback module, made
    where the CUDA runtime cannot load), else the binary format TVM already produced."""
    for binary in ("fatbin", "cubin", "ptx"):
        try:
            if module.inspect_source(binary):
                return binary
        except Exception:  # binary code that is not valid text: it is there
            return binary
    return "cuda"


def _gencode(arch: str) -> list[str]:
    number = arch[3:]
    return ["-gencode", f"arch=compute_{number},code=[sm_{number},compute_{number}]"]


def compile_fatbin(source: str, arch: str) -> bytes:
    """nvcc: CUDA C source -> fatbin with SASS for `arch` (e.g. 'sm_90') and its PTX."""
    with tempfile.TemporaryDirectory(prefix="conv1d-transpose-nvcc-") as work:
        source_path = os.path.join(work, "kernels.cu")
        out_path = os.path.join(work, "kernels.fatbin")
        with open(source_path, "w", encoding="utf-8") as file:
            file.write(source)
        command = ["nvcc", *NVCC_FLAGS, *_gencode(arch), "-o", out_path, source_path]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BackendError(f"nvcc failed ({' '.join(command)}):\n{proc.stdout}{proc.stderr}")
        with open(out_path, "rb") as file:
            return file.read()


def fatbin_entries(data: bytes) -> list[tuple[str, str]]:
    """(kind, arch) of every entry of every fatbin found in `data`, e.g. ('elf', 'sm_90').

    A fatbin is a 16-byte header (magic 0xBA55ED50, version, header size, payload size)
    followed by entries, each a header (kind 1 = PTX, 2 = ELF cubin; header size; payload
    size; ...; the SM number at offset 28) and its payload. There is no cuobjdump in the
    CUDA wheel set this project uses, so the tests read the format directly.
    """
    found = []
    magic = struct.pack("<I", _FATBIN_MAGIC)
    start = data.find(magic)
    while start >= 0:
        _, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
        offset, end = start + header_size, start + header_size + fat_size
        while offset + 32 <= min(end, len(data)):
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, offset)
            arch = struct.unpack_from("<I", data, offset + 28)[0]
            if entry_header == 0 or kind not in _FATBIN_KINDS:
                break
            name = "sm" if kind == 2 else "compute"
            found.append((_FATBIN_KINDS[kind], f"{name}_{arch}"))
            offset += entry_header + payload
        start = data.find(magic, max(end, start + 1))
    return found


# -- replacing CUDA source with a fatbin in the library blob ------------------------------

def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _string(value: bytes) -> bytes:
    return _u64(len(value)) + value


def _read_u64(blob: bytes, offset: int) -> tuple[int, int]:
    return struct.unpack_from("<Q", blob, offset)[0], offset + 8


def _read_bytes(blob: bytes, offset: int) -> tuple[bytes, int]:
    size, offset = _read_u64(blob, offset)
    return blob[offset:offset + size], offset + size


def replace_cuda_code(blob: bytes, fatbins: dict[str, bytes]) -> bytes:
    """`blob` (tvm-ffi's library binary) with each CUDA module's source replaced by its fatbin.

    Layout (tvm-ffi 0.1.14 library_module.cc): <nbytes u64> <indptr vec<u64>> <children
    vec<u64>> then per module <kind str> [<bytes>] ("_lib" has no bytes). A CUDA module's
    bytes are <fmt str> <function map> <code bytes> (TVM 0.27 cuda_module.cc); the code
    is the last field, so only fmt and code change.
    """
    nbytes, offset = _read_u64(blob, 0)
    if nbytes + 8 != len(blob):
        raise BackendError(f"unexpected TVM library blob: header says {nbytes} bytes, has "
                           f"{len(blob) - 8}")
    start = offset
    for _ in range(2):  # import tree: indptr, then child indices
        count, offset = _read_u64(blob, offset)
        offset += 8 * count
    indptr_count = struct.unpack_from("<Q", blob, start)[0]
    out = bytearray(blob[8:offset])
    replaced = 0
    for _ in range(indptr_count - 1):
        kind, offset = _read_bytes(blob, offset)
        out += _string(kind)
        if kind == b"_lib":
            continue
        module, offset = _read_bytes(blob, offset)
        if kind == b"cuda" and _read_bytes(module, 0)[0] == b"cuda":  # source, not binary
            module = _cuda_module_with_fatbin(module, fatbins)
            replaced += 1
        out += _string(module)
    if offset != len(blob) or replaced != len(fatbins):
        raise BackendError(f"unexpected TVM library blob: parsed {offset} of {len(blob)} "
                           f"bytes, replaced {replaced} of {len(fatbins)} CUDA modules")
    return _u64(len(out)) + bytes(out)


def _cuda_module_with_fatbin(module: bytes, fatbins: dict[str, bytes]) -> bytes:
    fmt, offset = _read_bytes(module, 0)
    for source, fatbin in fatbins.items():
        code = source.encode()
        tail = _u64(len(code)) + code
        if module.endswith(tail):
            function_map = module[offset:len(module) - len(tail)]
            return _string(b"fatbin") + function_map + _string(fatbin)
    raise BackendError(f"unexpected serialized CUDA module (format {fmt!r}): its code is not "
                       f"the CUDA source TVM generated; TVM's format may have changed")


def _packer(fatbins: dict[str, bytes]):
    """An `fpack_imports` for export_library: TVM's blob, fatbins in, as a C file."""
    import tvm_ffi
    from tvm.runtime import _ffi_api

    def pack(module, is_system_lib, prefix, workspace_dir):
        if is_system_lib:
            raise BackendError("system-lib CUDA exports are not supported")
        blob = bytes(_ffi_api.ModulePackImportsToTensor(module).numpy())
        blob = replace_cuda_code(blob, fatbins)
        symbol = prefix + tvm_ffi.get_global_func("runtime.ModuleImportsBlobName")()
        path = os.path.join(workspace_dir, f"{prefix}devc.c")
        with open(path, "w", encoding="ascii") as file:
            file.write(_blob_c_source(symbol, blob))
        return path

    return pack


def _blob_c_source(symbol: str, blob: bytes) -> str:
    # The same shape as TVM's ModulePackImportsToC: the extern declaration gives the array
    # external linkage when a C++ driver (g++) compiles it.
    lines = [",".join(f"0x{b:02x}" for b in blob[i:i + 20]) for i in range(0, len(blob), 20)]
    body = ",\n  ".join(lines)
    return ("#ifdef __cplusplus\nextern \"C\" {\n#endif\n"
            f"__attribute__((visibility(\"default\"))) extern const unsigned char {symbol}[];\n"
            f"const unsigned char {symbol}[{len(blob)}] = {{\n  {body}\n}};\n"
            "#ifdef __cplusplus\n}\n#endif\n")
