"""A CUDA schedule of the polyphase kernel: threads along output channels, a register
tile of output rows per thread.

Threads run along the output channels (packed filters are laid out with the channel
innermost, so a warp reads consecutive filter values and, in NWC, writes consecutive
outputs). Each thread keeps `rows` sums in registers over (tap, input channel): every
filter value it loads serves `rows` outputs of one phase, where a one-row thread loads a
filter value per multiply-add and is bound by the cache's bandwidth.
"""
from __future__ import annotations

import dataclasses

from .polyphase import Geometry, KernelLayout, Tiling, build_primfunc, decompose, plan_layout
from .schedule_cpu import loops_by_variable

THREADS = 128  # threads per block of the zero-filling blocks

# The plan rule below, read off a sweep of rows {1, 2, 4, 8, 16} x threads {32, 64, 128,
# 256} on every suite layer (H100 SXM, 132 SMs, sm_90; 2026-11-26, README "CUDA"):
# - a register tile of rows pays while a launch keeps at least MIN_LAUNCH_THREADS threads
#   (about 0.4 of the 270k an H100 holds at once); past that, the lost parallelism costs
#   more than the filter loads saved. Up to 8 rows: 16 lost on every layer.
# - 32 threads per block, except for wide layers (>= 512 output channels), where 64 was
#   1.4x faster (demucs-dec1, whose 64 MB of filters do not fit the L2).
# Picked per layer, the rule was within 3% of the sweep's best plan on all nine.
MIN_LAUNCH_THREADS = 96 * 1024
MAX_ROWS = 8


@dataclasses.dataclass(frozen=True)
class CudaPlan:
    """rows: output rows (of one phase) per thread, kept in registers; threads: threads
    per block along the output channels (a multiple of 32)."""

    rows: int = 1
    threads: int = 32


def choose_plan(geometry: Geometry) -> CudaPlan:
    """The plan rule (see MIN_LAUNCH_THREADS): the most rows per thread, up to MAX_ROWS,
    that leave every kernel launch MIN_LAUNCH_THREADS threads; one row if none does."""
    threads = 64 if geometry.out_channels >= 512 else 32
    dec = decompose(geometry)
    # One launch covers every phase when they share taps (the merged layout), else one.
    phases = dec.stride if dec.uniform_shift_step() is not None else 1
    batch = geometry.batch or 1  # symbolic batch: plan for one
    channels = -(-geometry.out_channels // threads) * threads
    rows = 1
    while rows * 2 <= MAX_ROWS and \
            batch * -(-dec.rows // (rows * 2)) * phases * channels >= MIN_LAUNCH_THREADS:
        rows *= 2
    return CudaPlan(rows, threads)


def tiling(geometry: Geometry, plan: CudaPlan | None = None) -> Tiling:
    plan = plan or choose_plan(geometry)
    return Tiling(rows=plan.rows, out_tile=plan.threads, in_tile=1)


def schedule(func, layout: KernelLayout, bind_threads: bool = True):
    """Apply the schedule; `bind_threads=False` leaves the thread loops serial, so that the
    same loop structure can be checked on a CPU (tests, no GPU needed)."""
    import tvm

    rows = layout.tiling.rows
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    if layout.groups:
        # The zero-padded input copy becomes a guarded load inside the sum.
        sch.compute_inline(sch.get_sblock(layout.pad_block))
    for accumulate, store, _ in layout.groups:
        block, store_block = sch.get_sblock(accumulate), sch.get_sblock(store)
        n, qq, r, coo, coi = sch.get_loops(store_block)
        row_tile = None
        if rows > 1:
            qq, row_tile = sch.split(qq, [None, rows])
            sch.reorder(qq, r, coo, coi, row_tile)
        # Grid: (row tiles x phases x channel tiles, batch); block: the channels of a tile.
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
        reduction = [loop[v] for v in ("vj", "vci") if v in loop]  # (unit loops are not made)
        if rows > 1:
            # Rows innermost: one filter load, `rows` multiply-adds on registers.
            sch.reorder(*reduction, loop["vq"])
            sch.unroll(loop["vq"])
            sch.unroll(row_tile)
        if reduction:
            sch.decompose_reduction(block, reduction[0])
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


def build(geometry: Geometry, target=None, bind_threads: bool = True,
          plan: CudaPlan | None = None):
    """(scheduled PrimFunc, KernelLayout) for a CUDA target; `plan` defaults to
    `choose_plan(geometry)`."""
    layout = plan_layout(geometry, tiling(geometry, plan))
    return schedule(build_primfunc(layout), layout, bind_threads), layout
