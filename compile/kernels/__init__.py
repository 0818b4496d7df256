"""compile/kernels: the polyphase conv1d_transpose kernel and its hand schedules.

`build_kernel(geometry, target)` gives the scheduled PrimFunc `(input, packed_filters) ->
output` for a CPU (llvm: x86, aarch64) or CUDA target, with the `KernelLayout` that
`pack_filters` needs to lay the filters out for it. On CPUs, shapes with two or three
taps per phase (K = 2s, K = 3s, dilated stride 1) may get the Winograd F(2,2) or F(2,3)
form of it (winograd.py). Layers with few output channels and K a multiple of s run as
a stride-1 kernel with the phases as channels (folding.py).
"""
from __future__ import annotations

from .folding import fold_filters, fold_phases, kernel_geometry
from .polyphase import (Decomposition, Geometry, KernelLayout, Phase, Tiling, decompose,
                        kernel_source, pack_filters, plan_layout)

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
