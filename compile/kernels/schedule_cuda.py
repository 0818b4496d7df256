"""A simple, correct CUDA schedule of the polyphase kernel: one thread per output.

Threads run along the output channels (packed filters are laid out with the channel
innermost, so a warp reads consecutive filter values and, in NWC, writes consecutive
outputs); each thread keeps its sum in a register over (tap, input channel). Not tuned:
the point is a GPU build that is right and far from TVM's zero-insertion default.
"""
from __future__ import annotations

from .polyphase import Geometry, KernelLayout, Tiling, build_primfunc, plan_layout
from .schedule_cpu import loops_by_variable

THREADS = 128  # threads per block of the zero-filling blocks


def tiling(geometry: Geometry) -> Tiling:
    # One thread per output channel of a tile: whole warps, at most 256 per block.
    return Tiling(rows=1, out_tile=min(-(-geometry.out_channels // 32) * 32, 256), in_tile=1)


def schedule(func, layout: KernelLayout, bind_threads: bool = True):
    """Apply the schedule; `bind_threads=False` leaves the thread loops serial, so that the
    same loop structure can be checked on a CPU (tests, no GPU needed)."""
    import tvm

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    if layout.groups:
        # The zero-padded input copy becomes a guarded load inside the sum.
        sch.compute_inline(sch.get_sblock(layout.pad_block))
    for accumulate, store, _ in layout.groups:
        block, store_block = sch.get_sblock(accumulate), sch.get_sblock(store)
        n, qq, r, coo, coi = sch.get_loops(store_block)
        # Grid: (rows x phases x channel tiles, batch); block: the channels of a tile.
        # The batch may be a symbolic int64: its own grid axis rather than a fuse with
        # the int32 loops, and no split of a fused loop by a size that does not align
        # with it: either would make the bindings non-affine.
        grid = sch.fuse(qq, r, coo)
        if bind_threads:
            sch.bind(n, "blockIdx.y")
            sch.bind(grid, "blockIdx.x")
            sch.bind(coi, "threadIdx.x")
        sch.compute_at(block, coi)
        sch.set_scope(block, 0, "local")
        loop = loops_by_variable(sch, block)
        first = loop.get("vj", loop.get("vci"))  # (unit loops are not created)
        if first is not None:
            sch.decompose_reduction(block, first)
    for name in layout.zero_blocks:
        n, qq, co = sch.get_loops(sch.get_sblock(name))
        _bind_flat(sch, n, sch.fuse(qq, co), bind_threads)
    return sch.mod["main"]


def _bind_flat(sch, batch_loop, flat_loop, bind_threads=True):
    blocks, threads = sch.split(flat_loop, [None, THREADS])
    if bind_threads:
        sch.bind(batch_loop, "blockIdx.y")
        sch.bind(blocks, "blockIdx.x")
        sch.bind(threads, "threadIdx.x")
    return threads


def build(geometry: Geometry, target=None, bind_threads: bool = True):
    """(scheduled PrimFunc, KernelLayout) for a CUDA target."""
    layout = plan_layout(geometry, tiling(geometry))
    return schedule(build_primfunc(layout), layout, bind_threads), layout
