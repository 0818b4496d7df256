"""compile/kernels: the polyphase conv1d_transpose kernel and its hand schedules.

`build_kernel(geometry, target)` gives the scheduled PrimFunc `(input, packed_filters) ->
output` for a CPU (llvm: x86, aarch64) or CUDA target, with the `KernelLayout` that
`pack_filters` needs to lay the filters out for it. On CPUs, shapes whose phases all
have the same 2 to 16 taps (K = 2s, K = 3s, a stride-1 or folded layer) may get the
Winograd F(2,r) form of it, built of F(2,2) and F(2,3) blocks (winograd.py). Layers with few output channels and K a multiple of s run as
a stride-1 kernel with the phases as channels (folding.py). Stride-1 NCW layers with
few channels run in the width form instead (source_width.py: vectorized along the width;
compile/lowering.py asks schedule_cpu_width.applies), and strided NCW layers of few
channels with K a multiple of s in its phase form (source_phase_width.py: a phase at a
time, each a stride-1 correlation over the rows; schedule_cpu_width.applies_phase).

One module per idea, each importing only the ones listed before it:

- polyphase.py: the decomposition into phases (`Geometry`, `decompose`);
- folding.py: phases folded into channels, for layers with few output channels;
- winograd.py: the Winograd form's arithmetic (where it applies, its transforms, slots);
- layout.py: tiles, the kernel's sizes (`KernelLayout`) and the packed filters;
- tir.py: TIR helpers that the sources and schedules share;
- source_direct.py, source_winograd.py: the TVMScript of each form, unscheduled;
- forms.py: `build_primfunc`, the source of the form a layout asks for;
- prefetch.py: software prefetch of the filters for blocked CPU plans;
- schedule_cpu_winograd.py: the CPU schedule of the Winograd form;
- schedule_cpu.py: the CPU plans (which also choose the form) and the direct form's
  CPU schedule; schedule_cuda.py: the CUDA schedules (direct form);
- source_width.py, source_phase_width.py, schedule_cpu_width.py: the width form of a
  stride-1 NCW layer and its phase form for a strided one (each with its own layout and
  filter packing), their CPU schedules and the rules of which layers take them;
- this file: the public names, and `build_kernel`, which picks the schedule for a target.
"""
from __future__ import annotations

from .folding import fold_filters, fold_phases, kernel_geometry
from .layout import KernelLayout, Tiling, pack_filters, plan_layout
from .polyphase import Decomposition, Geometry, Phase, decompose
from .source_direct import kernel_source

# The version of the kernel's CPU code: part of the compile cache key, and the key of the
# CPU tuning records (a bump retires every shipped record). Bump it when the CPU kernel's
# code can change; the cache key also hashes compile/'s sources, so a change to the CUDA
# schedule alone (as in polyphase-2's row tiles) rebuilds CUDA artifacts without a bump.
KERNEL_VERSION = "polyphase-2"


def target_family(target) -> str | None:
    """"cpu" (llvm), "cuda", or None where no schedule exists for the target."""
    kind = target.kind.name
    if kind == "llvm":
        return "cpu"
    if kind == "cuda":
        return "cuda"
    return None


def build_kernel(geometry: Geometry, target):
    """(scheduled PrimFunc, KernelLayout) of the kernel for `target` (a tvm Target)."""
    family = target_family(target)
    if family == "cpu":
        from . import schedule_cpu
        return schedule_cpu.build(geometry, target)
    if family == "cuda":
        from . import schedule_cuda
        return schedule_cuda.build(geometry, target)
    raise ValueError(f"no conv1d_transpose kernel schedule for target kind "
                     f"{target.kind.name!r}; supported: llvm, cuda")


__all__ = [
    "Decomposition", "Geometry", "KERNEL_VERSION", "KernelLayout", "Phase", "Tiling",
    "build_kernel", "decompose", "fold_filters", "fold_phases", "kernel_geometry",
    "kernel_source", "pack_filters", "plan_layout", "target_family",
]
