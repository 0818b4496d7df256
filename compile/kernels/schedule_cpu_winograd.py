"""The CPU schedule of the Winograd F(2,r) form (source_winograd.py's kernel), applied
after a plan (schedule_cpu.plan) chose that form: the direct form's register tile over
pairs of rows, the products one after another inside it; blocked and prefetched
(prefetch.py) where its filters stream from beyond L2. There is no CUDA schedule of this
form.
"""
from __future__ import annotations

from .layout import KernelLayout
from .tir import finish_tile, loops_by_variable, parallel_transpose, vectorize_channels


def blocks_reduction(cpu_plan, stride: int) -> bool:
    """Whether `schedule` runs a plan's reduction in blocks, its filters streamed from
    beyond L2 (what summed_filters is for)."""
    in_tile = cpu_plan.phases_in_tile and stride > 1
    return (cpu_plan.winograd and cpu_plan.blocked and cpu_plan.order != "rows"
            and not in_tile and cpu_plan.chunk_tiles > 0)


def schedule(func, layout: KernelLayout, cpu_plan):
    """The CPU schedule of `winograd_source`'s kernel, after schedule_cpu.schedule: the
    same register tile (`rows` pairs x channel vectors, optionally x phases), with the
    GEMMs (k, winograd.products(r)) one after another inside it, each over the input channels."""
    import tvm

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    tiling = layout.tiling
    in_tile = cpu_plan.phases_in_tile and layout.decomposition.stride > 1
    block, store = sch.get_sblock("accumulate"), sch.get_sblock("store")
    n, t, h, r, coo, coi = sch.get_loops(store)
    to, ti = sch.split(t, [None, tiling.rows])
    # Blocked ("filters" order, a filter panel beyond L2): a chunk of tiles runs the
    # reduction in blocks of `in_tile` channels, its accumulators in a local array across
    # the blocks, each tile prefetching its share of the next block (prefetch.py), as in
    # the direct form's blocked plans.
    # (schedule_cpu.build sums the filters where this holds: elsewhere "sum_filters"
    # stays a pass of its own, right but slow; the tests compare the two on one plan.)
    blocked = blocks_reduction(cpu_plan, layout.decomposition.stride)
    if cpu_plan.order == "rows":
        if in_tile:
            sch.reorder(n, to, coo, ti, h, r, coi)
            outer = coo
        else:
            sch.reorder(n, to, coo, r, ti, h, coi)
            outer = r
        parallel = sch.fuse(n, to)
    else:
        chunk = []
        if blocked:
            tc, to = sch.split(to, [None, cpu_plan.chunk_tiles])
            chunk = [tc]
        if in_tile:
            sch.reorder(coo, n, to, ti, h, r, coi)
            parallel = coo
        else:
            sch.reorder(coo, r, n, *chunk, to, ti, h, coi)
            parallel = sch.fuse(coo, r)
        outer = chunk[0] if blocked else to
    sch.compute_at(block, outer)
    loop = loops_by_variable(sch, block)
    a_k, a_ci, a_t, a_coi = loop["vk"], loop["vci"], loop.get("vt"), loop["vcoi"]
    a_r = loop.get("vr") if in_tile else None
    reduction = a_ci
    if blocked:
        # The transformed input in the order the blocked loop reads it: [n, channel block,
        # tile, k, row of the tile, channel]. As [n, t, k, ci], a tile's pass over one
        # block of one product read `rows` pieces of 128 bytes, each a row of k * ci
        # floats apart (a multiple of 4 KiB for 2048 channels, so the same L1 sets), and
        # began each pass on cold lines. demucs-dec1's record (F(2,2), 11 x 2, 32-channel
        # blocks), kernel ms, interleaved in one process (`tools/cpu/kernel_plans.py`),
        # Emerald Rapids, 2026-11-27, two runs: 6.56 and 6.56 -> 6.50 and 6.37; 6.95 and
        # 6.82 -> 6.85 and 6.54 (1-4%).
        tile_rows = tiling.rows
        channels = tiling.in_tile
        sch.transform_layout(
            sch.get_sblock("transform"), ("write", 0),
            lambda n, t, k, ci: (n, ci // channels, t // tile_rows, k, t % tile_rows,
                                 ci % channels))
        reduction, a_ci = sch.split(a_ci, [None, tiling.in_tile])
        a_to, a_t = sch.split(a_t, [None, tiling.rows])
        sch.reorder(reduction, a_to, a_k, a_ci, a_t, a_coi)
        if layout.summed_filters:
            # The block's G0 + G1 once per chunk of tiles, into an L1-sized buffer that
            # every tile's middle product reads (not in each tile's own pass: that is one
            # add per filter vector and tile).
            summed = sch.get_sblock("sum_filters")
            sch.compute_at(summed, reduction)
            vectorize_channels(sch, sch.get_loops(summed)[-1], cpu_plan.lanes)
    tile_loops = [item for item in (a_t, a_r) if item is not None]
    sch.reorder(a_k, a_ci, *tile_loops, a_coi)
    sch.set_scope(block, 0, "local")
    sch.parallel(parallel)
    # Every index into the accumulators constant: k and the tile unrolled (see
    # schedule_cpu.schedule on what a rolled one costs).
    sch.unroll(a_k)
    for item in tile_loops:
        sch.unroll(item)
    vectorize_channels(sch, a_coi, cpu_plan.lanes)
    finish_tile(sch, store, outer, block, reduction, cpu_plan.lanes)
    # (Every phase is a loop of its own here: vr counts from phase 0.)
    prefetches = [(a_ci, layout, [0], False, cpu_plan.chunk_tiles)] if (
        blocked and cpu_plan.prefetch) else []
    # The check runs over the same parallel split as the store.
    n, t, r, coo, h, coi = sch.get_loops(sch.get_sblock("check"))
    if cpu_plan.order == "rows":
        to, ti = sch.split(t, [None, tiling.rows])
        sch.reorder(n, to, ti, r, coo, h, coi)
        sch.parallel(sch.fuse(n, to))
    else:
        sch.reorder(coo, r, n, t, h, coi) if not in_tile else sch.reorder(coo, n, t, r, h, coi)
        sch.parallel(sch.fuse(coo, r) if not in_tile else coo)
    nwc = layout.geometry.data_format == "NWC"
    pad, transform = sch.get_sblock("pad"), sch.get_sblock("transform")
    if cpu_plan.order == "rows":
        # Each tile of pairs transforms its own input rows, so the transformed input,
        # (r + 1)/2 times the input, makes no round trip through memory; in NWC the
        # transform reads the input itself, the zero padding inlined. hifigan-up3 in
        # F(2,2), kernel ms, Zen 4, 2026-11-26: 5.08 with both as passes, 4.54 so (the
        # direct form: 4.85); a padded copy per tile instead of inlined: 7.0-7.5.
        sch.compute_at(transform, parallel)
        if nwc:
            sch.compute_inline(pad)
        t, k, ci = sch.get_loops(transform)[-3:]
    else:
        n, t, k, ci = sch.get_loops(transform)
        sch.parallel(sch.fuse(n, t))
    if not (nwc and cpu_plan.order == "rows"):
        n, p, ci_ = sch.get_loops(pad)
        if nwc:
            sch.parallel(sch.fuse(n, p))
            sch.vectorize(ci_)
        else:
            parallel_transpose(sch, n, p, ci_)
    sch.unroll(k)
    if blocked:
        # Vectorized over all the channels, the store into the blocked layout above is a
        # gather that TVM lowers lane by lane: a 16 s build for demucs-dec1 (0.3 s so).
        ci = sch.split(ci, [None, tiling.in_tile])[1]
    sch.vectorize(ci)
    if layout.geometry.folded_stride > 1:
        # The folded kernel's scatter to the layer's positions (source_winograd.py): a
        # run of s phases per kernel row, contiguous in the output when Cout is 1.
        n, q, ch = sch.get_loops(sch.get_sblock("layout"))
        sch.parallel(sch.fuse(n, q))
    elif not nwc:
        n, co, o = sch.get_loops(sch.get_sblock("layout"))
        parallel_transpose(sch, n, o, co)
    if prefetches:
        from . import prefetch
        return prefetch.insert(sch.mod["main"], sch, prefetches, rows="vt", tap="vk")
    return sch.mod["main"]
