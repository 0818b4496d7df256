"""CUDA schedules of the polyphase kernel: a shared-memory GEMM-like tiling, and a
register tile of output rows per thread where that does not apply.

The shared-memory plan (`_schedule_shared`, most layers): a thread block computes a tile
of output rows x output channels of one phase, each thread a small rows x channels tile
in registers; per step of input channels the block stages the tile's filters and padded
input rows in shared memory, so every value loaded from global memory serves a row or a
column of the tile. The register-tile plan (layers with a phase group per phase, and
layers too small to fill the GPU with tiles): threads run along the output channels
(packed filters are laid out with the channel innermost, so a warp reads consecutive
filter values and, in NWC, writes consecutive outputs), each keeping `rows` sums in
registers, so every filter value it loads serves `rows` outputs. `choose_plan` picks.
"""
from __future__ import annotations

import dataclasses

from .forms import build_primfunc
from .layout import KernelLayout, Tiling, plan_layout
from .polyphase import Geometry, decompose
from .tir import loops_by_variable

THREADS = 128  # threads per block of the zero-filling blocks

# The register-tile plan's rule (register_plan), read off a sweep of rows {1, 2, 4, 8, 16}
# x threads {32, 64, 128, 256} on every suite layer (H100 SXM, 132 SMs, sm_90; 2026-11-26,
# docs/design/cuda.md):
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
    per block along the output channels (a multiple of 32 in the register-tile plan).

    row_threads > 0 makes it a shared-memory plan (`_schedule_shared`): a block of
    row_threads x threads threads computes (row_threads * rows) rows x (threads * channels)
    output channels of one phase, each thread a rows x channels register tile, staging
    in_chunk input channels of the input rows and filters in shared memory per step.
    """

    rows: int = 1
    threads: int = 32
    row_threads: int = 0
    channels: int = 1
    in_chunk: int = 1
    vector: int = 1  # elements per thread and load in the shared-memory fills
    # Elements of padding after each staged input row in shared memory (in_chunk
    # channels a row). NCW fills write down the rows, in_chunk elements apart: a stride
    # of in_chunk + 1 puts a warp's 32 writes in 32 banks instead of 2.
    skew: int = 0

    @property
    def shared(self) -> bool:
        return self.row_threads > 0


# The shared-memory plans, by output-channel tile, and their rule, read off two sweeps on
# the nine suite layers and the six of docs/outside-suite.yaml (H200, 132 SMs, sm_90;
# 2026-11-26, docs/design/cuda.md; docs/cuda/h200-kernel-sweep*.json):
# - the widest channel tile that divides the output channels (padding channels are
#   computed on zeros: a 128 tile on 96 channels was 1.24x slower than a 32 one);
# - while the kernel keeps MIN_BLOCKS blocks (about 1.5 per SM), counted over its phase
#   groups (a launch each): demucs-dec1's 64 input rows make 160 blocks of the 128 tile,
#   1.29x slower than 640 of the 32 tile; stride3-k7-valid's three groups of 189 blocks
#   ran 1.45x faster than the register tiles;
# - where no tile keeps MIN_BLOCKS blocks (the streaming chunk), the register tiles
#   (register_plan) were faster;
# - 4-element vector loads in the shared-memory fills: 1.01-1.29x faster on 11 of the 13
#   layers sweep 2 ran both ways, 1% slower on ncw-up2 and 4% on dilated (and 1.05x on
#   stride3-k7-valid in the rule check).
# On the suite's layers the rule was within 16% of the sweep's best plan (hifigan-up2:
# 0.077 against 0.066 ms), and within 8% on seven of them.
SHARED_PLANS = {
    128: CudaPlan(rows=4, threads=32, row_threads=4, channels=4, in_chunk=16, vector=4),
    64: CudaPlan(rows=4, threads=16, row_threads=8, channels=4, in_chunk=32, vector=4),
    32: CudaPlan(rows=2, threads=16, row_threads=8, channels=2, in_chunk=16, vector=4),
}
MIN_BLOCKS = 200
# NCW input rows staged in_chunk + 1 apart (CudaPlan.skew), which made the NCW kernels
# 5-8% faster: ncw-up2 0.0967-0.0970 -> 0.0914-0.0918 ms, ncw-s5-k10 0.0320-0.0321 ->
# 0.0294-0.0297 (four runs each; H200, 2026-11-27, docs/design/cuda.md). In NWC the fills
# write whole float4s along the channels, which a skew would misalign.
NCW_SKEW = 1
# Static shared memory per block is at most 48 KB; the filters' part grows with the taps.
# in_chunk is halved to fit, down to 2 (a chunk of 1 would leave no input-channel loop
# to split when a layer has one input channel); a layer that still does not fit gets
# the register-tile plan.
MAX_SHARED_BYTES = 32 * 1024


def choose_plan(geometry: Geometry) -> CudaPlan:
    """A shared-memory plan where one fits (see SHARED_PLANS), else the register-tile
    plan of `register_plan`."""
    dec = decompose(geometry)
    # Blocks over all phase groups: every phase in one launch (merged), else a launch per
    # phase that has taps.
    merged = dec.uniform_shift_step() is not None
    phases = dec.stride if merged else len(dec.active)
    batch = geometry.batch or 1  # symbolic batch: plan for one
    for tile, plan in SHARED_PLANS.items():
        if geometry.out_channels % tile and tile != min(SHARED_PLANS):
            continue
        block_rows = plan.rows * plan.row_threads
        blocks = batch * -(-dec.rows // block_rows) * phases * -(-geometry.out_channels // tile)
        if blocks < MIN_BLOCKS:
            continue
        if geometry.data_format == "NCW" and merged:
            # One phase group stages the input itself: skew its rows (CudaPlan.skew).
            plan = dataclasses.replace(plan, skew=NCW_SKEW)
        chunk = plan.in_chunk
        while chunk > 2 and shared_bytes(geometry, dataclasses.replace(plan, in_chunk=chunk)) \
                > MAX_SHARED_BYTES:
            chunk //= 2
        plan = dataclasses.replace(plan, in_chunk=chunk)
        if shared_bytes(geometry, plan) <= MAX_SHARED_BYTES:
            return plan
    return register_plan(geometry)


def shared_bytes(geometry: Geometry, plan: CudaPlan) -> int:
    """Shared memory of one block of a shared-memory plan: the filters of a channel tile
    (every tap, in_chunk input channels) and the padded input rows they read."""
    dec = decompose(geometry)
    item = geometry.accumulate_bytes
    filters = dec.max_taps * plan.in_chunk * plan.threads * plan.channels
    rows = plan.rows * plan.row_threads + (dec.max_taps - 1) * dec.row_step
    return item * (filters + rows * (plan.in_chunk + plan.skew))


def register_plan(geometry: Geometry) -> CudaPlan:
    """The register-tile plan (see MIN_LAUNCH_THREADS): the most rows per thread, up to MAX_ROWS,
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
    if plan.shared:
        return Tiling(rows=plan.row_threads * plan.rows, out_tile=plan.threads * plan.channels,
                      in_tile=plan.in_chunk)
    return Tiling(rows=plan.rows, out_tile=plan.threads, in_tile=1)


def schedule(func, layout: KernelLayout, bind_threads: bool = True,
             plan: CudaPlan | None = None):
    """Apply the schedule; `bind_threads=False` leaves the thread loops serial, so that the
    same loop structure can be checked on a CPU (tests, no GPU needed)."""
    import tvm

    rows = layout.tiling.rows
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    if plan is not None and plan.shared:
        _schedule_shared(sch, layout, plan, bind_threads)
        for name in layout.zero_blocks:
            n, qq, co = sch.get_loops(sch.get_sblock(name))
            _bind_flat(sch, n, sch.fuse(qq, co), bind_threads)
        return sch.mod["main"]
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
        _bind(sch, bind_threads, n=n, grid=grid, tx=coi)
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


def _read_index(sch, block, name: str) -> int:
    return next(i for i, region in enumerate(sch.get(block).reads)
                if getattr(region.source, "name", None) == name)


def _cooperative(sch, stage, after, plan: CudaPlan, bind_threads: bool, vector: int = 1):
    """Spread a shared-memory fill (compute_at under loop `after`) over the block's
    row_threads x threads threads, the innermost axis fastest (coalesced reads), `vector`
    consecutive elements per thread and load."""
    loops = sch.get_loops(stage)
    at = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(after)))
    own = loops[at + 1:]
    flat = sch.fuse(*own) if len(own) > 1 else own[0]
    if vector > 1:
        _, ty, tx, lanes = sch.split(flat, [None, plan.row_threads, plan.threads, vector])
        sch.vectorize(lanes)
    else:
        _, ty, tx = sch.split(flat, [None, plan.row_threads, plan.threads])
    _bind(sch, bind_threads, ty=ty, tx=tx)


def _schedule_shared(sch, layout: KernelLayout, plan: CudaPlan, bind_threads: bool):
    """The shared-memory plan (see CudaPlan): the accumulate block tiled like a GEMM,
    (row tiles x phases x channel tiles) blocks of (row_threads, threads) threads, each
    with a (rows x channels) register tile of consecutive channels (its filter values
    are adjacent in shared memory, and its NWC stores contiguous). Per in_chunk step the
    tile's filters and, with one phase group, its padded input rows go to shared memory:
    every input value then serves threads * channels outputs and every filter value
    row_threads * rows."""
    one_group = len(layout.groups) == 1
    if not one_group:
        # Several phase groups read the padded input, so it cannot move into one group's
        # tile: it stays a kernel of its own writing a global copy, which each group
        # stages into shared memory like the filters.
        n, p, ci = sch.get_loops(sch.get_sblock(layout.pad_block))
        _bind_flat(sch, n, sch.fuse(p, ci), bind_threads)
    for accumulate, store, _ in layout.groups:
        # Tiled from the store (the only consumer of its accumulator; several stores
        # write the output, so the accumulate block cannot take them in).
        block, store_block = sch.get_sblock(accumulate), sch.get_sblock(store)
        n, qq, r, coo, coi = sch.get_loops(store_block)
        qo, ty, rt = sch.split(qq, [None, plan.row_threads, plan.rows])
        tx, ct = sch.split(coi, [plan.threads, plan.channels])
        sch.reorder(qo, r, coo, ty, tx, rt, ct)
        grid = sch.fuse(qo, r, coo)
        _bind(sch, bind_threads, n=n, grid=grid, ty=ty, tx=tx)
        sch.compute_at(block, tx)
        sch.set_scope(block, 0, "local")
        loop = loops_by_variable(sch, block)
        cio, cii = sch.split(loop["vci"], [None, plan.in_chunk])
        tile = [loop[v] for v in ("vq", "vcoi") if v in loop]
        sch.reorder(cio, *[loop[v] for v in ("vj",) if v in loop], cii, *tile)
        stages = [sch.cache_read(block, _read_index(sch, block, "filters"), "shared",
                                 consumer_blocks=[block])]
        sch.compute_at(stages[0], cio)
        if not one_group:
            stages.append(sch.cache_read(block, _read_index(sch, block, "xp"), "shared",
                                         consumer_blocks=[block]))
            sch.compute_at(stages[-1], cio)
        else:
            pad = sch.get_sblock(layout.pad_block)
            # Shared before compute_at: the region is then the whole thread block's (with
            # the global scope, compute_at under the thread loops sizes it per thread).
            sch.set_scope(pad, 0, "shared")
            sch.compute_at(pad, cio)
            if layout.geometry.data_format == "NCW":
                # Input rows innermost: consecutive threads read consecutive NCW inputs.
                own = sch.get_loops(pad)[-2:]
                sch.reorder(own[1], own[0])
            if plan.skew:
                # Row stride in_chunk + skew (the stride modulo in_chunk is skew).
                sch.storage_align(pad, 0, axis=1, factor=plan.in_chunk, offset=plan.skew)
            stages.append(pad)
        # Vector loads need the innermost axis to be contiguous and aligned in both
        # buffers: always so for the packed filters (channel tiles of 32 and more); for
        # the input only in NWC with whole vectors of input channels per row.
        vectors = [plan.vector, plan.vector if layout.geometry.data_format == "NWC" and
                   layout.geometry.in_channels % plan.vector == 0 else 1]
        for stage, vector in zip(stages, vectors):
            _cooperative(sch, stage, cio, plan, bind_threads, vector)
        sch.decompose_reduction(block, cio)
        for unrolled in (*tile, rt, ct):
            sch.unroll(unrolled)


def _bind_flat(sch, batch_loop, flat_loop, bind_threads=True):
    blocks, threads = sch.split(flat_loop, [None, THREADS])
    _bind(sch, bind_threads, n=batch_loop, grid=blocks, tx=threads)
    return threads


_AXES = {"n": "blockIdx.y", "grid": "blockIdx.x", "ty": "threadIdx.y", "tx": "threadIdx.x"}


def _bind(sch, bind_threads: bool, **loops):
    """Bind loops to the launch: n (batch) and grid to blocks, ty and tx to threads;
    nothing when bind_threads is False (the loops then run serially, on a CPU)."""
    if bind_threads:
        for name, loop in loops.items():
            sch.bind(loop, _AXES[name])


def build(geometry: Geometry, target=None, bind_threads: bool = True,
          plan: CudaPlan | None = None, width=None):
    """(scheduled PrimFunc, KernelLayout) for a CUDA target; `plan` defaults to
    `choose_plan(geometry)`.

    width: a symbolic_width.SymbolicWidth: the kernel for every input width, planned at
    `geometry`'s (the reference width). Its row loop is rounded up to whole tiles of the
    plan's rows (`SymbolicWidth.padded_rows`), so the splits above leave no remainder;
    the grid's extent is then an expression of the width, which the launch computes, and
    the zero-filling and padding blocks, split by THREADS, keep their guard."""
    plan = plan or choose_plan(geometry)
    layout = plan_layout(geometry, tiling(geometry, plan))
    return schedule(build_primfunc(layout, width=width), layout, bind_threads, plan), layout
