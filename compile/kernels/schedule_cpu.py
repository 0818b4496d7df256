"""Hand schedule of the polyphase kernel for CPUs (x86 AVX-512/AVX2/SSE, aarch64 NEON).

The kernel is a GEMM per phase group: rows q x (phase, output channel) x (tap, input
channel). The register tile holds `rows` q-rows by `out_tile` output channels (as
machine-width vectors; with few output channels, every phase of a row too): per input
channel it broadcasts one input value per row and loads one packed filter vector per
column vector (AVX-512: 6 rows x 4 vectors = 24 zmm accumulators; NEON: 6 x 4 q-registers,
`fmla v.4s, v.4s, v.s[i]`). `plan` picks the loop order from the sizes alone:

- "rows": the filters fit in L2 (hifigan-up3/up4, dilated); row tiles are the parallel
  loop and the zero-padded input tile is copied next to them;
- "filters": (channel block, phase) panels are the parallel loop so one filter panel
  stays in L2 while every row streams past it (hifigan-up1/up2, batch8-up2). A panel
  larger than L2 (demucs-dec1) is also blocked along the input channels, with the
  accumulators of a chunk of rows kept in a local array and each block of filters
  prefetched while the one before it runs (prefetch.py). In NCW the phases of a row
  chunk run back to back, so each output line is finished while it is in cache.

Where every phase has the same 2 to 16 equally spaced taps (K = 2s or 3s, a stride-1
layer, a folded one), a plan may take the Winograd F(2,r) form instead (`winograd=True`,
scheduled in schedule_cpu_winograd.py): the same register tile over pairs of rows, 3/4
(F(2,2)) to 2/3 (F(2,3)) of the multiply-adds, and sums of those blocks past three taps
(winograd.py). Its panels (the products' filters) are blocked and prefetched the same way where they outgrow L2 and its filters
exceed what the generic plan streams (a `tune` candidate).

Every loop transform comes before decompose_reduction (TVM's schedule refuses them after).
"""
from __future__ import annotations

import dataclasses

from . import schedule_cpu_winograd
from .forms import build_primfunc
from .layout import KernelLayout, Tiling, plan_layout
from .polyphase import Geometry, decompose
from .tir import finish_tile, loops_by_variable, parallel_transpose, vectorize_channels


@dataclasses.dataclass(frozen=True)
class CpuTarget:
    """What the schedule needs to know about a CPU target."""

    vector_bits: int  # 512 (AVX-512), 256 (AVX2), 128 (SSE, NEON)
    registers: int  # architectural vector registers: 32 (AVX-512, aarch64) or 16
    cores: int
    l2_bytes: int = 1 << 20


# Filters of a folded NCW kernel that take the one-vector "rows" plan (see `_plan`):
# between the 4.2 MB that won and the 8.4 MB that lost on a 32 MB L3 shared by the VM.
FOLDED_ROWS_FILTER_BYTES = 6 << 20


def describe_target(target) -> CpuTarget:
    """Vector width and register count of an llvm target (x86 or aarch64)."""
    from tvm.target import codegen

    cores = int(target.attrs.get("num-cores", 0) or 0)
    if cores <= 0:
        import os
        cores = os.cpu_count() or 1
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith(("aarch64", "arm64")) or "arm_cpu" in list(target.keys):
        return CpuTarget(128, 32, cores)
    if codegen.target_has_features(["avx512f"], target):
        return CpuTarget(512, 32, cores)
    if codegen.target_has_features(["avx2"], target):
        return CpuTarget(256, 16, cores)
    return CpuTarget(128, 16, cores)


@dataclasses.dataclass(frozen=True)
class CpuPlan:
    tiling: Tiling
    phases_in_tile: bool  # the register tile spans every phase (merged group only)
    order: str  # "rows" or "filters"
    unroll_taps: bool = False
    # "filters" order only. chunk_tiles: row tiles per chunk of rows (0: no chunks).
    # blocked: the reduction is blocked by in_tile outside the rows of a chunk, whose
    # accumulators stay in a local array. phases_inner: (NCW) the phases of a chunk run
    # back to back.
    chunk_tiles: int = 0
    blocked: bool = False
    phases_inner: bool = False
    # Lanes of one machine vector: the channel loop is split into vectors of exactly this
    # width. LLVM legalizes a <48 x float> (three AVX-512 vectors) with a storm of
    # shuffles (4.5 GFLOP/s); three <16 x float> are plain.
    lanes: int = 16
    # The Winograd F(2,r) form (winograd.py): `tiling.rows` counts pairs of rows.
    winograd: bool = False
    # Filters packed by phase (KernelLayout.phase_major): `plan` sets it for tiles of one
    # phase. Records tuned before it existed have no such key and keep the interleaved
    # packing they were timed with.
    phase_major: bool = False
    # Blocked plans only: each tile of rows also prefetches its share of the next
    # reduction block of filters (prefetch.py). Records without the key run without.
    prefetch: bool = False


def plan(geometry: Geometry, cpu: CpuTarget, *, vectors: int | None = None,
         rows: int | None = None, order: str | None = None,
         phases_in_tile: bool | None = None, winograd: bool | None = None) -> CpuPlan:
    """A schedule for any shape, from its sizes alone (no tuning).

    The keyword arguments override the choices the rules below make (the tuner's knobs,
    `candidate_plans`); everything else is derived from them.
    """
    import dataclasses as _dataclasses

    from . import winograd as _winograd
    from .polyphase import decompose

    applies = _winograd.applies(geometry)
    dec = decompose(geometry)
    direct = _plan(geometry, cpu, vectors, rows, order, phases_in_tile)
    if winograd is None and applies:
        # F(2,2) saves a quarter of the multiply-adds and costs passes over the input
        # (the transform) and the output (the check), plus three parallel launches. So:
        # many input channels, or an input that stays in cache; and not below ~16 MFLOP,
        # where the launches (~15 us) outweigh the saving. Kernel ms, direct -> F(2,2)
        # with the same tile, Zen 4, 2026-11-26: hifigan-up1 3.92 -> 3.31, hifigan-up2
        # 7.56 -> 6.39, ncw-up2 8.15 -> 7.36, stride5-k10 2.35 -> 1.90; in cache,
        # batch4-k8-s4 (128 channels) 1.17 -> 1.00, ncw-s5-k10 (160) 1.86 -> 1.49; but
        # hifigan-up3 (128 channels, 6.5 MB of input) 4.08 -> 4.29. A panel beyond L2
        # (demucs-dec1) took 11.9 ms blocked, 12.0 in F(2,2) with this tile and 8.9 with
        # phases in the tile: `tune` finds that one. F(2,3), which saves a third, on the
        # dilated layer (128 channels, 2 MB of input): 1.79 -> 1.39 ms. In the "rows"
        # order each tile transforms its own input (winograd.schedule), so the input's
        # size no longer counts there: hifigan-up3 3.83 -> 3.28 ms (2026-11-26); with 64
        # channels (hifigan-up4) this tile lost, 2.14 -> 3.29.
        # Its filters (3/2 of the direct form's, 5/3 for F(2,3)) are read from memory
        # every call once they outgrow the last-level cache, and then the direct form
        # (prefetched, blocked) wins. Kernel ms, direct (blocked) -> F(2,2), Emerald Rapids (this VM
        # reads at DRAM speed past 64-128 MB), 2026-11-26: 24 MB of F(2,2) filters,
        # 1024 -> 512 channels, 129 rows 3.50 -> 2.94 and hifigan-up1 with 1024 input
        # channels 5.59 -> 4.73; 48 MB (2048 -> 512) 3.68 -> 4.15; demucs-dec1, 96 MB,
        # 7.1 -> 8.6-9.8 in every tile tried (NCW: 7.9 -> 11.2).
        # Past that cap, a blocked F(2,2) plan packs G1 and G0 alone (summed_filters):
        # it streams the direct form's bytes for 3/4 of its multiply-adds, so it is
        # taken there too, with BLOCKED_WINOGRAD_PAIRS pairs a tile. Kernel ms, generic
        # (direct, blocked) -> F(2,2) so, Zen 4, 2026-12-06 (tools/cpu/kernel_plans.py):
        # demucs-dec1 10.80 -> 8.10, in NCW 11.59 -> 8.94; 2048 -> 512 channels (K 8,
        # s 4, 64 rows) 5.61 -> 4.32; 1024 -> 1024 with 129 rows 10.82 -> 8.09. On
        # Emerald Rapids `tune` picked the same plan for demucs-dec1 and its NCW form
        # (6.07-6.58 against 6.90-7.77 for the direct form, 2026-11-27).
        input_bytes = geometry.batch * geometry.in_width * geometry.in_channels * 4
        summed = dec.max_taps == 2 and _winograd_blocks(geometry, direct, cpu)
        winograd = ((_winograd_filter_bytes(geometry) <= WINOGRAD_FILTER_BYTES or summed)
                    and geometry.flops >= 16e6
                    and (geometry.in_channels >= 256
                         or input_bytes <= cpu.cores * cpu.l2_bytes
                         or (direct.order == "rows" and geometry.in_channels >= 128)))
    if not (winograd and applies):
        return direct
    if geometry.data_format == "NCW" and vectors is None:
        # The F(2,r) kernel stores an NWC copy of the output and transposes it at the end
        # (winograd.py), so it takes a wider tile, up to four vectors of channels, where
        # they divide the channels: ncw-up2 (128) 8.97 ms with one vector, 7.53 with four;
        # but ncw-s5-k10 (80: two 64-wide blocks) 1.60 with one, 2.50 with four
        # (tools/cpu/kernel_plans.py, 2026-11-26).
        wide = next(v for v in (4, 2, 1) if geometry.out_channels % (v * direct.lanes) == 0
                    or v == 1)
        direct = _plan(_dataclasses.replace(geometry, data_format="NWC"), cpu, wide, rows,
                       order, phases_in_tile)
    tiling = direct.tiling
    pairs = _winograd.pairs_of(dec)
    blocked = _winograd_blocks(geometry, direct, cpu)
    if order is None and not blocked and direct.order != "rows" \
            and -(-pairs // min(tiling.rows, pairs)) >= WINOGRAD_ROWS_TILES_PER_CORE * cpu.cores:
        # Enough tiles of pairs to share among the cores: each transforms its input
        # rows once for every channel block (the "filters" order transforms them in a
        # pass of its own and reads them back per panel). Kernel ms, generic ("filters")
        # -> "rows", F(2,r), Zen 4, busy VM, 2026-12-06 (tools/cpu/kernel_plans.py):
        # hifigan-up2 (134 tiles) 7.56 -> 6.27, batch8-up2 (34) 13.9 -> 13.2,
        # hifigan-up1 (17) 6.18 -> 6.10, vocos-istft (folded, 32) 3.61 -> 3.10,
        # HiFi-GAN's 128-channel K 11 d 5 resblock conv (267) 4.89 -> 4.38; but
        # stream-chunk (one tile) 0.183 -> 0.350.
        direct = _plan(_dataclasses.replace(geometry, data_format="NWC")
                       if geometry.data_format == "NCW" and vectors is None else geometry,
                       cpu, direct.tiling.out_tile // direct.lanes, rows, "rows",
                       phases_in_tile)
        tiling = direct.tiling
    if rows is None and blocked:
        tiling = _dataclasses.replace(tiling, rows=min(BLOCKED_WINOGRAD_PAIRS, pairs))
    elif rows is None:
        # The tile counts pairs of rows: as many as fit, split evenly over the pairs.
        tiles = -(-pairs // min(tiling.rows, pairs))
        tiling = _dataclasses.replace(tiling, rows=-(-pairs // tiles))
    # The Winograd schedule has no NCW phase order. Where its filters are past the cap
    # (F(2,2) then packs two slots, see above; F(2,3) only from `tune`) and the panel of
    # the products outgrows L2 (a quarter, as in `_plan`), its reduction is blocked as the
    # direct form's is, in the "filters" order with a tile of one phase: blocks of 16 KiB
    # of filters, each prefetched while the one before runs. demucs-dec1 in F(2,2) (96
    # MB; tile 11 pairs x 2 vectors), kernel ms, interleaved in one process, Emerald
    # Rapids, 2026-11-26: 10.2 unblocked; 16, 32, 64 channels a block (6, 12, 24 KiB)
    # 6.89, 6.70, 7.33 (the direct form's plan: 7.23); a 6 x 4 tile with 128 channels a
    # block, 8.6 prefetched and 10.5 not. Below the cap, where more tiles share each panel,
    # blocking lost: hifigan-up1 with 1024 input channels (24 MB), 4.71 -> 5.92.
    element = geometry.accumulate_bytes
    slots = _winograd.products(dec.max_taps)
    in_tile, chunk_tiles = geometry.in_channels, 0
    if blocked:
        target = max(direct.lanes, (16 << 10) // (slots * tiling.out_tile * element))
        in_tile = _divisor_near(geometry.in_channels, target)
        chunk_tiles = _chunk_tiles(tiling.rows * slots * tiling.out_tile * element,
                                   -(-pairs // tiling.rows))
    return _dataclasses.replace(direct, blocked=blocked, chunk_tiles=chunk_tiles,
                                phases_inner=False, prefetch=blocked,
                                tiling=_dataclasses.replace(tiling, in_tile=in_tile),
                                winograd=True)


def _chunk_tiles(tile_bytes: int, tiles: int) -> int:
    """Tiles of rows per chunk of a blocked reduction: as many as keep the chunk's
    accumulators, held across the blocks in a local array, within 64 KiB."""
    return max(1, min((64 << 10) // tile_bytes, tiles))


def _divisor_near(channels: int, target: int) -> int:
    """A block of input channels: the largest divisor of `channels` in (target/2,
    target], else `target` (the last block is padded)."""
    return min(channels, next((t for t in range(target, target // 2, -1)
                               if channels % t == 0), target))


# Tiles of pairs per core from which an unblocked F(2,r) plan runs in the "rows" order
# (see `plan`).
WINOGRAD_ROWS_TILES_PER_CORE = 4
# The most F(2,r) filter bytes the generic plan streams per call (see `plan`).
WINOGRAD_FILTER_BYTES = 32 << 20
# Pairs of rows a tile of a blocked F(2,2) plan, where no tile is asked for: kernel ms,
# demucs-dec1 (33 pairs), 2, 3, 4, 5 pairs x 4 vectors: 9.24, 8.33, 8.90, 9.11; 3 x 2
# vectors 8.47 (Zen 4, 2026-12-06). `tune` picked 3 x 4 on Emerald Rapids too.
BLOCKED_WINOGRAD_PAIRS = 3


def _winograd_blocks(geometry: Geometry, direct: CpuPlan, cpu: CpuTarget) -> bool:
    """Whether a F(2,r) plan from `direct`'s tile blocks its reduction: filters past
    WINOGRAD_FILTER_BYTES and a panel of the products past a quarter of L2, in
    the "filters" order with a tile of one phase (see `plan`)."""
    from .polyphase import decompose

    from .winograd import products

    slots = products(decompose(geometry).max_taps)
    panel = slots * geometry.in_channels * direct.tiling.out_tile * geometry.accumulate_bytes
    return (direct.order == "filters" and not direct.phases_in_tile
            and panel > cpu.l2_bytes // 4
            and _winograd_filter_bytes(geometry) > WINOGRAD_FILTER_BYTES)


def _winograd_filter_bytes(geometry: Geometry) -> int:
    from .polyphase import decompose
    from .winograd import filter_slots

    dec = decompose(geometry)
    element = geometry.accumulate_bytes
    return (filter_slots(dec.max_taps) * dec.stride * geometry.in_channels
            * geometry.out_channels * element)


def _plan(geometry, cpu, vectors, rows, order, phases_in_tile) -> CpuPlan:
    from .polyphase import decompose

    dec = decompose(geometry)
    element = geometry.accumulate_bytes
    lanes = cpu.vector_bits // (8 * element)
    # Accumulators: leave room for the filter vectors and one broadcast.
    budget = cpu.registers - 8 if cpu.registers >= 32 else cpu.registers - 4
    cout, cin = geometry.out_channels, geometry.in_channels
    beta = dec.uniform_shift_step()
    # Output-channel vectors per row: up to 4 (64 float32 channels with AVX-512). In NCW
    # each lane of a vector is stored to its own output row, so a narrow tile with more
    # rows wins: one vector measured 1.04-1.30x faster than four on ncw-up2, NCW s=5 and
    # NCW hifigan-up3/dilated shapes (on par for NCW hifigan-up1), Zen 4, 2026-11-25.
    # But where even the widest tile's filter panel outgrows L2, the blocked, prefetched
    # reduction needs the wide tile's reuse: demucs-dec1 in NCW, kernel 9.65 ms with one
    # vector, 7.86 with four (9.95 without the prefetch), Emerald Rapids, 2026-11-26.
    most = max(1, min(4 if cpu.registers >= 32 else 2, -(-cout // lanes)))
    wide_panel = max(dec.max_taps, 1) * cin * most * lanes * element
    # A folded NCW kernel (folding.py: its lanes are runs of the layer's output) whose
    # filters stay in the last-level cache takes one vector of channels and row tiles as
    # the parallel loop (the "rows" order, below): each row tile streams every filter
    # from cache. Past it, the filters come from memory once per row tile. Kernel ms,
    # generic -> one vector in rows, Zen 4 (32 MB L3 shared by the VM), 2026-12-06,
    # WL=docs/outside-suite-istft.yaml tools/cpu/kernel_plans.py: ISTFT n_fft 512 (0.5 MB
    # of filters) 1.19 -> 0.88;
    # n_fft 1024 hop 512 (2.1 MB) 2.02 -> 1.97; vocos-istft (4.2 MB) 4.03 -> 3.76; but
    # n_fft 2048 (8.4 MB) 4.03 -> 6.20 and htdemucs-istft in NCW (34 MB) 29.6 -> 66.8.
    folded_rows = (geometry.data_format == "NCW" and geometry.folded_stride > 1
                   and max(dec.max_taps, 1) * cin * cout * element <= FOLDED_ROWS_FILTER_BYTES)
    if vectors is None:
        if geometry.data_format == "NCW" and geometry.folded_stride == 1 \
                and wide_panel <= cpu.l2_bytes // 4:
            vectors = 1
        elif folded_rows:
            vectors = 1
        else:
            # The fewest padded channels, then the widest tile: 96 channels take three
            # vectors, not two blocks of four with a quarter computed on zeros
            # (stride3-k7-valid, kernel 1.12 -> 0.91 ms in the "filters" order, Emerald
            # Rapids, 2026-11-26, tools/cpu/kernel_plans.py).
            vectors = min(range(min(2, most), most + 1),
                          key=lambda v: (-(-cout // (v * lanes)) * v, -v))
    # Few output channels: a row of the tile covers every phase of one q (one contiguous
    # run of s*Cout outputs in NWC), sharing the broadcast input value.
    can_span_phases = beta == 0 and dec.stride > 1
    if phases_in_tile is None:
        phases_in_tile = can_span_phases and vectors * dec.stride <= 4
    phases_in_tile = phases_in_tile and can_span_phases
    row_vectors = vectors * dec.stride if phases_in_tile else vectors
    if rows is None:
        rows = max(1, min(budget // row_vectors, 14, max(dec.rows, 1)))
    out_tile = vectors * lanes
    out_blocks = -(-cout // out_tile)
    taps = max(dec.max_taps, 1)
    panel = taps * cin * out_tile * element  # filters of one (channel block, phase)
    filters = panel * out_blocks * dec.stride
    panels = out_blocks * (dec.stride if beta is not None and not phases_in_tile else 1)
    if order is None and folded_rows and vectors == 1:
        order = "rows"
    if order is None:
        # Panels as the parallel loop need enough of them to share evenly: as many as the
        # cores will do. stride3-k7-valid (a launch per phase, two 48-channel panels on
        # two cores), kernel 1.47 -> 0.91 ms in the "filters" order, same day.
        uneven = panels < 2 * cpu.cores and panels % cpu.cores
        order = "rows" if filters <= cpu.l2_bytes // 4 or uneven else "filters"
    if order == "rows":
        return CpuPlan(Tiling(rows, out_tile, cin), phases_in_tile, "rows", lanes=lanes,
                       phase_major=not phases_in_tile)
    tiles = -(-dec.rows // rows)
    tile_bytes = rows * out_tile * element * (dec.stride if phases_in_tile else 1)
    blocked = panel > cpu.l2_bytes // 4
    in_tile = cin
    chunk_tiles = 0
    if blocked:
        # The panel does not fit in L2: block the reduction; a chunk of rows keeps its
        # accumulators in a local array (<= 64 KiB) across the blocks. Blocks of 32 KiB
        # of filters, each prefetched while the one before runs (prefetch.py). Kernel
        # ms, Emerald Rapids, 2026-11-26, interleaved in one process: demucs-dec1 8.27
        # (128 KiB blocks, no prefetch) -> 8.18 (32 KiB) -> 7.07 (32 KiB, prefetched);
        # 7.36 with 64 KiB blocks prefetched; at width 32, 4.50 -> 4.10. With 129 rows
        # to a phase (2048 -> 1024 channels) the first tile's wait is spread thinner:
        # 3.56 -> 3.58.
        target = max(lanes, (32 << 10) // (taps * out_tile * element))
        in_tile = _divisor_near(cin, target)
        chunk_tiles = _chunk_tiles(tile_bytes, tiles)
    phases_inner = geometry.data_format == "NCW" and not phases_in_tile and dec.stride > 1
    if phases_inner:
        # Rows per chunk: enough to reuse each filter panel, few enough that the
        # chunk's output lines stay in L2 and every core gets chunks.
        chunk_tiles = min(chunk_tiles or tiles, max(1, 96 // rows))
        while chunk_tiles > 1 and out_blocks * -(-tiles // chunk_tiles) < 2 * cpu.cores:
            chunk_tiles //= 2
    return CpuPlan(Tiling(rows, out_tile, in_tile), phases_in_tile, "filters",
                   chunk_tiles=chunk_tiles, blocked=blocked, phases_inner=phases_inner,
                   lanes=lanes, phase_major=not phases_in_tile, prefetch=blocked)


def candidate_plans(geometry: Geometry, cpu: CpuTarget) -> list[CpuPlan]:
    """The plans the tuner times for a shape: the rules' own plan first, then every
    register tile that fits the register file (1-4 channel vectors by several row
    counts), in both loop orders, with and without phases in the tile, in the direct and
    (where it exists) the Winograd F(2,r) form."""
    from .polyphase import decompose

    dec = decompose(geometry)
    element = geometry.accumulate_bytes
    lanes = cpu.vector_bits // (8 * element)
    budget = cpu.registers - 8 if cpu.registers >= 32 else cpu.registers - 4
    most = max(1, min(4 if cpu.registers >= 32 else 2, -(-geometry.out_channels // lanes)))
    from .winograd import applies as _applies, pairs_of
    applies = _applies(geometry)
    plans = [plan(geometry, cpu)]
    for vectors in range(1, most + 1):
        for phases_in_tile in (False, True):
            row_vectors = vectors * (dec.stride if phases_in_tile else 1)
            if row_vectors > budget:
                continue
            # In the F(2,r) form a tile row is a pair of output rows.
            for winograd in (False, True) if applies else (False,):
                units = max(pairs_of(dec) if winograd else dec.rows, 1)
                fit = max(1, min(budget // row_vectors, 14, units))
                if phases_in_tile and fit < 2:
                    continue  # one row of every phase: no reuse of the filter vectors
                # Row counts: the most that fit, and those that split the rows into
                # equal tiles with less padding.
                even = -(-units // -(-units // fit))
                # (A one-row tile only where one row is all that fits: its split of
                # extent 1 can leave the store's loops unchainable for reorder.)
                for rows in sorted(r for r in {fit, even, fit - 2, fit // 2}
                                   if r >= min(2, fit)):
                    for order in ("rows", "filters"):
                        plans.append(plan(geometry, cpu, vectors=vectors, rows=rows,
                                          order=order, phases_in_tile=phases_in_tile,
                                          winograd=winograd))
    unique = []
    for item in plans:
        if item not in unique:
            unique.append(item)
    return unique


def schedule(func, layout: KernelLayout, cpu_plan: CpuPlan, ncw_copy: bool = False):
    """Apply the plan to the PrimFunc from `forms.build_primfunc(layout, ncw_copy=)`."""
    import tvm

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    geometry, tiling = layout.geometry, layout.tiling
    nwc = geometry.data_format == "NWC"
    pad = sch.get_sblock(layout.pad_block) if layout.groups else None
    pad_at_tile = (len(layout.groups) == 1 and cpu_plan.order == "rows")
    symbolic_batch = geometry.batch is None

    prefetches = []
    for index, (accumulate, store, phases) in enumerate(layout.groups):
        # The store block is tiled and the accumulation computed at its tile: stores of
        # several phase groups share `out`, so they are not complete blocks and cannot be
        # moved with reverse_compute_at.
        block, store_block = sch.get_sblock(accumulate), sch.get_sblock(store)
        n, qq, r, coo, coi = sch.get_loops(store_block)
        qo, qi = sch.split(qq, [None, tiling.rows])
        in_tile = cpu_plan.phases_in_tile and len(phases) > 1
        if cpu_plan.order == "rows":
            if in_tile:
                sch.reorder(n, qo, coo, qi, r, coi)
                outer = coo
            else:
                sch.reorder(n, qo, coo, r, qi, coi)
                outer = r
            # A symbolic (int64) batch fused with the int32 row loop gives bindings with
            # casts, which are not quasi-affine: keep the batch loop serial then.
            parallel = qo if symbolic_batch else sch.fuse(n, qo)
        else:
            chunk = []
            if cpu_plan.chunk_tiles:
                qc, qo = sch.split(qo, [None, cpu_plan.chunk_tiles])
                chunk = [qc]
            if in_tile:
                sch.reorder(coo, n, *chunk, qo, qi, r, coi)
                parallel = coo
                outer = chunk[0] if cpu_plan.blocked else qo
            elif cpu_plan.phases_inner:
                # NCW: a phase writes every s-th output of a channel row, so the phases
                # of one chunk of rows run back to back while its output lines are in
                # cache (phases as the outer parallel loop wrote each line s times).
                sch.reorder(n, coo, qc, r, qo, qi, coi)
                parallel = qc if symbolic_batch else sch.fuse(coo, qc)
                outer = r if cpu_plan.blocked else qo
            else:
                sch.reorder(coo, r, n, *chunk, qo, qi, coi)
                parallel = sch.fuse(coo, r)
                outer = chunk[0] if cpu_plan.blocked else qo
        sch.compute_at(block, outer)
        if pad is not None and pad_at_tile:
            sch.compute_at(pad, parallel)
        loop = loops_by_variable(sch, block)
        # One input channel (or one per block) makes no loop at all: nothing to split.
        a_cio = a_cii = None
        if "vci" in loop:
            a_cio, a_cii = sch.split(loop["vci"], [None, tiling.in_tile])
        a_j, a_coi = loop.get("vj"), loop["vcoi"]
        a_q = loop.get("vq")
        row_loops = []
        if cpu_plan.blocked and a_q is not None:
            a_qo, a_q = sch.split(a_q, [None, tiling.rows])
            row_loops = [a_qo]
        tile_loops = [a_q] + ([loop.get("vr")] if in_tile else [])
        order = [item for item in [a_cio] + row_loops + [a_j, a_cii] + tile_loops + [a_coi]
                 if item is not None]
        sch.reorder(*order)
        if len(order) == 1:
            # One tap, one input channel, one row: no loop above the channels' for the
            # accumulators' init to go before (vectorizing a reduction block that has
            # its init inside fails), so give it a unit loop.
            order.insert(0, sch.add_unit_loop(a_coi))
        tile_loops = [item for item in tile_loops if item is not None]
        sch.set_scope(block, 0, "local")
        sch.parallel(parallel)
        for loop in tile_loops:
            sch.unroll(loop)
        vectorize_channels(sch, a_coi, cpu_plan.lanes)
        if cpu_plan.unroll_taps and a_j is not None:
            sch.unroll(a_j)
        # Store: one vector of channels per row and phase, every loop of the tile unrolled.
        # Any variable index into the accumulator array (a loop over channels or rows
        # left rolled) keeps LLVM from promoting it to registers, and the whole
        # reduction then runs through memory (4.5 instead of 90 GFLOP/s, seen on NCW
        # with 48 channels). In NCW the vector's lanes go to separate output rows.
        finish_tile(sch, store_block, outer, block, order[0], cpu_plan.lanes)
        if cpu_plan.prefetch and cpu_plan.blocked and a_q is not None:
            passes = cpu_plan.chunk_tiles or layout.padded_rows // tiling.rows
            prefetches.append((a_cii, layout, phases, in_tile, passes))

    blocked_input = pad is not None and cpu_plan.blocked and not pad_at_tile and not symbolic_batch
    if blocked_input:
        # The padded input in the order the blocked loop reads it, [n, channel block, row,
        # channel]: a tile's pass over one block then reads its rows as one run of lines,
        # not as pieces a row of channels apart (a multiple of 4 KiB from 1024 channels
        # up, so the same L1 sets); as schedule_cpu_winograd does for its transformed input.
        # demucs-ncw (docs/outside-suite-wide.yaml), kernel ms, interleaved in one
        # process (`tools/cpu/kernel_plans.py`), Emerald Rapids, 2026-11-27: 7.82 and
        # 7.92 -> 7.73 and 7.57; demucs-dec1's direct plan unchanged (7.26-7.34 both).
        # Not with a symbolic batch: transform_layout refuses the int64 batch index
        # beside int32 ones in one access.
        channels = tiling.in_tile
        sch.transform_layout(pad, ("write", 0),
                             lambda n, p, ci: (n, ci // channels, p, ci % channels))
    if pad is not None:
        loops = sch.get_loops(pad)
        if pad_at_tile:
            # (A tile's copy of one input channel of one row has no loop of its own.)
            if nwc and not sch.get(loops[-1]).same_as(sch.get(parallel)):
                sch.vectorize(loops[-1])
        else:
            n, p, ci = loops
            if nwc:
                sch.parallel(p if symbolic_batch else sch.fuse(n, p))
                if blocked_input:
                    # (One block's channels at a time: see schedule_cpu_winograd.)
                    ci = sch.split(ci, [None, tiling.in_tile])[1]
                sch.vectorize(ci)
            else:
                parallel_transpose(sch, n, p, ci, symbolic_batch)
    for name in layout.zero_blocks:
        n, qq, co = sch.get_loops(sch.get_sblock(name))
        sch.parallel(qq if symbolic_batch else sch.fuse(n, qq))
        if nwc:
            sch.vectorize(co)
    if ncw_copy:
        n, co, o = sch.get_loops(sch.get_sblock("layout"))
        parallel_transpose(sch, n, o, co, symbolic_batch)
    if prefetches:
        from . import prefetch
        return prefetch.insert(sch.mod["main"], sch, prefetches)
    return sch.mod["main"]


def build(geometry: Geometry, target, cpu_plan: CpuPlan | None = None, width=None,
          ncw_copy: bool = False):
    """(scheduled PrimFunc, KernelLayout) for a CPU target.

    width: a symbolic_width.SymbolicWidth: the kernel for every input width, planned and
    laid out at `geometry`'s (the reference width); see `symbolic_plan`. ncw_copy: an
    NCW direct-form kernel's stores through an NWC copy (source_direct.kernel_source)."""
    if width is not None:
        cpu_plan, width = symbolic_plan(geometry, describe_target(target), width, cpu_plan)
    cpu_plan = cpu_plan or plan(geometry, describe_target(target))
    summed = schedule_cpu_winograd.blocks_reduction(cpu_plan, decompose(geometry).stride)
    layout = plan_layout(geometry, cpu_plan.tiling, cpu_plan.winograd, cpu_plan.phase_major,
                         summed_filters=summed)
    func = build_primfunc(layout, width=width, ncw_copy=ncw_copy and not cpu_plan.winograd)
    if cpu_plan.winograd:
        return schedule_cpu_winograd.schedule(func, layout, cpu_plan), layout
    return schedule(func, layout, cpu_plan, ncw_copy), layout


def symbolic_plan(geometry: Geometry, cpu: CpuTarget, width, cpu_plan: CpuPlan | None = None):
    """(plan, width) of a symbolic-width kernel (symbolic_width.py): the plan of the
    reference width, with no split of the row loop that could leave a remainder.

    A split of a symbolic extent that TVM cannot prove whole puts a guard on every block
    below it, inside the reduction loops: NCW hifigan-up1 ran 0.67-0.83x the static
    kernel so, 1.00x without (kernel ms, Zen 4, 2026-12-06, /tmp trial). So the phases of
    an NCW chunk of rows run over one tile at a time (chunk_tiles 1: 20.1 ms at 1000
    frames, as the static kernel's 6 tiles), and a blocked plan, whose chunk holds the
    accumulators across reduction blocks, rounds its rows up to whole chunks instead.
    The Winograd form keeps no chunks except blocked, which falls back to the direct
    form here, as does a symbolic batch (its schedule fuses the batch loop)."""
    import dataclasses as _dataclasses

    cpu_plan = cpu_plan or plan(geometry, cpu)
    if cpu_plan.winograd and (geometry.batch is None or cpu_plan.chunk_tiles):
        cpu_plan = plan(geometry, cpu, winograd=False)
    if cpu_plan.phases_inner and not cpu_plan.blocked:
        cpu_plan = _dataclasses.replace(cpu_plan, chunk_tiles=1)
    if cpu_plan.chunk_tiles > 1:
        width = _dataclasses.replace(width, tiles_per_chunk=cpu_plan.chunk_tiles)
    return cpu_plan, width
