"""The Winograd F(2,2) form of the polyphase kernel: 3 multiplies where it takes 4.

Where every phase has two taps, one row apart, with one input shift (d = 1 and K = 2s:
every HiFi-GAN and Demucs upsampler), output rows `q = 2t` and `2t + 1` of a phase are,
with `u = 2t + c` the input row of tap 0 and G0, G1 the taps' [in, out] matrices,

    y[2t]     = x[u] G0   + x[u-1] G1  = m1 + m2
    y[2t + 1] = x[u+1] G0 + x[u] G1    = m2 + m3

    m1 = (x[u-1] - x[u]) G1,   m2 = x[u] (G0 + G1),   m3 = (x[u+1] - x[u]) G0

(Winograd's minimal filtering, Lavin and Gray 2016, arXiv:1509.09308). Three GEMMs over
half the rows replace two over all of them: 3/4 of the multiply-adds, for a transform
of the input (two subtractions per pair and channel) and of the filters (once, at
compile time). The transforms' coefficients are all +-1, so rounding stays at the
direct form's order (checked against the reference like every kernel).

The transform would break one exact property: an Inf in the input gives Inf - Inf = NaN
in m, where TensorFlow's direct sum has +-Inf, and a huge finite pair may overflow in a
difference. Both show as a non-finite output, and a non-finite direct result is always
non-finite here too, so a last pass ("fix") recomputes, in the direct form, every pair
of rows that came out with a non-finite value: TensorFlow's answer, at the cost of a
scan of the output.
"""
from __future__ import annotations

import numpy as np

from .polyphase import Geometry, KernelLayout, _inside, decompose


def applies(geometry: Geometry) -> bool:
    """Whether the F(2,2) form exists for this shape (and this kernel generator has it):
    every phase with two taps one row apart and one shared input shift, a static batch
    (either layout)."""
    dec = decompose(geometry)
    return (geometry.batch is not None and dec.row_step == 1 and dec.uniform_shift_step() == 0
            and all(p.taps == 2 for p in dec.phases) and dec.rows >= 2)


def transform_filters(packed: np.ndarray) -> np.ndarray:
    """Direct packed filters `[blocks, 2, in, s, out_tile]` (taps G0, G1) ->
    `[blocks, 3, in, s, out_tile]` = (G1, G0 + G1, G0): the matrices of m1, m2, m3."""
    g0, g1 = packed[:, 0], packed[:, 1]
    # G0 + G1 rounded once, from the exact sum.
    both = (g0.astype(np.float64) + g1.astype(np.float64)).astype(packed.dtype)
    return np.ascontiguousarray(np.stack([g1, both, g0], axis=1))


def winograd_source(layout: KernelLayout, name: str = "conv1d_transpose_polyphase") -> str:
    """TVMScript of the unscheduled F(2,2) kernel: pad, transform, accumulate, store, fix."""
    g, dec, t = layout.geometry, layout.decomposition, layout.tiling
    acc, dtype = g.accumulate_dtype, g.dtype
    N, W, O, Cout, Cin = g.batch, g.in_width, g.out_width, g.out_channels, g.in_channels
    S, rho = dec.stride, dec.offset
    CI, COO, COT, P = layout.in_channels, layout.out_blocks, t.out_tile, layout.padded_width
    TP = layout.padded_rows // 2
    w0 = layout.input_first_row
    # Input row (of xp) of tap 0 for output row q: q + c (tap j reads q + c - j).
    c = dec.q_first - dec.phases[0].shift - w0
    nwc = g.data_format == "NWC"

    def out_at(o, co):
        return f"out[vn, {o}, {co}]" if nwc else f"out[vn, {co}, {o}]"

    x_read = f"x[vn, vp + {w0}, vci]" if nwc else f"x[vn, vci, vp + {w0}]"
    position = f"(vt * 2 + vh) * {S} + vr - {rho}"
    inside = _inside(position, -rho, O, Cout, COT)
    inside_fix = _inside(f"(vt * 2 + h) * {S} + r - {rho}", -rho, O)
    lines = [
        "@T.prim_func(private=True, s_tir=True)",
        f"def {name}(x: T.Buffer({g.input_shape}, \"{dtype}\"), "
        f"filters: T.Buffer({layout.filters_shape}, \"{acc}\"), "
        f"out: T.Buffer({g.output_shape}, \"{dtype}\")):",
        "    T.func_attr({\"tirx.noalias\": True})",
        f"    xp = T.sblock_alloc_buffer(({N}, {P}, {CI}), \"{acc}\")",
        f"    xw = T.sblock_alloc_buffer(({N}, {TP}, 3, {CI}), \"{acc}\")",
        f"    flags = T.sblock_alloc_buffer(({N}, {TP}, {S}, {COO}), \"int32\")",
        f"    for n, p, ci in T.grid({N}, {P}, {CI}):",
        "        with T.sblock(\"pad\"):",
        "            vn, vp, vci = T.axis.remap(\"SSS\", [n, p, ci])",
        f"            xp[vn, vp, vci] = T.if_then_else(vp + {w0} >= 0 and vp + {w0} < {W} "
        f"and vci < {Cin}, T.Cast(\"{acc}\", {x_read}), T.Cast(\"{acc}\", 0))",
        # k = 0, 1, 2: x[u-1] - x[u], x[u], x[u+1] - x[u].
        f"    for n, t, k, ci in T.grid({N}, {TP}, 3, {CI}):",
        "        with T.sblock(\"transform\"):",
        "            vn, vt, vk, vci = T.axis.remap(\"SSSS\", [n, t, k, ci])",
        f"            xw[vn, vt, vk, vci] = T.if_then_else(vk == 1, xp[vn, vt * 2 + {c}, vci], "
        f"xp[vn, vt * 2 + {c - 1} + vk, vci] - xp[vn, vt * 2 + {c}, vci])",
        # The two GEMM stages in a scope of their own: the check reads `out`, which the
        # fix then writes, and a scope with such a read before a write is no "stage
        # pipeline" for compute_at.
        "    with T.sblock(\"gemm\"):",
        f"        acc0 = T.sblock_alloc_buffer(({N}, {TP}, 3, {S}, {COO}, {COT}), \"{acc}\")",
        f"        for n, t, k, r, coo, coi, ci in T.grid({N}, {TP}, 3, {S}, {COO}, {COT}, {CI}):",
        "            with T.sblock(\"accumulate\"):",
        "                vn, vt, vk, vr, vcoo, vcoi, vci = T.axis.remap(\"SSSSSSR\", "
        "[n, t, k, r, coo, coi, ci])",
        "                with T.init():",
        f"                    acc0[vn, vt, vk, vr, vcoo, vcoi] = T.Cast(\"{acc}\", 0)",
        "                acc0[vn, vt, vk, vr, vcoo, vcoi] = acc0[vn, vt, vk, vr, vcoo, vcoi] "
        "+ xw[vn, vt, vk, vci] * filters[vcoo, vk, vci, vr, vcoi]",
        f"        for n, t, h, r, coo, coi in T.grid({N}, {TP}, 2, {S}, {COO}, {COT}):",
        "            with T.sblock(\"store\"):",
        "                vn, vt, vh, vr, vcoo, vcoi = T.axis.remap(\"SSSSSS\", [n, t, h, r, coo, coi])",
        f"                if {inside}:",
        f"                    {out_at(position, f'vcoo * {COT} + vcoi')} = T.Cast(\"{dtype}\", "
        "acc0[vn, vt, vh, vr, vcoo, vcoi] + acc0[vn, vt, vh + 1, vr, vcoo, vcoi])",
        # Whether a pair's outputs in one (phase, channel block) are all finite: read
        # back by the thread that stored them, while they are in its cache. Rows are
        # clamped into [0, O): a pair cut by the edge may check a neighbour's row (at
        # worst a needless recompute).
        f"    for n, t, r, coo, h, coi in T.grid({N}, {TP}, {S}, {COO}, 2, {COT}):",
        "        with T.sblock(\"check\"):",
        "            vn, vt, vr, vcoo, vh, vcoi = T.axis.remap(\"SSSSRR\", [n, t, r, coo, h, coi])",
        "            with T.init():",
        "                flags[vn, vt, vr, vcoo] = 0",
        "            flags[vn, vt, vr, vcoo] = T.max(flags[vn, vt, vr, vcoo], T.if_then_else("
        f"T.isfinite({out_at(f'T.max(T.min({position}, {O - 1}), 0)', f'T.min(vcoo * {COT} + vcoi, {Cout - 1})')}), 0, 1))",
        # The direct form for a pair of rows with a non-finite output (G0 = filters[:, 2],
        # G1 = filters[:, 0]); an opaque block, run only for such pairs. Parallel in the
        # source: it reads what it writes (out), which the schedule's parallel refuses.
        f"    for n in range({N}):",
        f"      for t in T.parallel({TP}):",
        "        with T.sblock(\"fix\"):",
        "            vn, vt = T.axis.remap(\"SS\", [n, t])",
        "            bad = T.sblock_alloc_buffer((1,), \"int32\", scope=\"local\")",
        f"            total = T.sblock_alloc_buffer((1,), \"{acc}\", scope=\"local\")",
        "            bad[0] = 0",
        f"            for r, coo in T.grid({S}, {COO}):",
        "                bad[0] = T.max(bad[0], flags[vn, vt, r, coo])",
        "            if bad[0] == 1:",
        f"                for h, r, co in T.grid(2, {S}, {Cout}):",
        f"                    if {inside_fix}:",
        f"                        total[0] = T.Cast(\"{acc}\", 0)",
        f"                        for j, ci in T.grid(2, {Cin}):",
        f"                            total[0] = total[0] + xp[vn, vt * 2 + h + {c} - j, ci] * "
        f"filters[co // {COT}, 2 - 2 * j, ci, r, co % {COT}]",
        f"                        {out_at(f'(vt * 2 + h) * {S} + r - {rho}', 'co')} = "
        f"T.Cast(\"{dtype}\", total[0])",
    ]
    return "\n".join(lines) + "\n"


def schedule(func, layout: KernelLayout, cpu_plan):
    """The CPU schedule of `winograd_source`'s kernel, after schedule_cpu.schedule: the
    same register tile (`rows` pairs x channel vectors, optionally x phases), with the
    three GEMMs (k) one after another inside it, each over the input channels."""
    import tvm

    from .schedule_cpu import (_vectorize_channels, finish_tile, loops_by_variable,
                               parallel_transpose)

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    tiling = layout.tiling
    in_tile = cpu_plan.phases_in_tile and layout.decomposition.stride > 1
    block, store = sch.get_sblock("accumulate"), sch.get_sblock("store")
    n, t, h, r, coo, coi = sch.get_loops(store)
    to, ti = sch.split(t, [None, tiling.rows])
    if cpu_plan.order == "rows":
        if in_tile:
            sch.reorder(n, to, coo, ti, h, r, coi)
            outer = coo
        else:
            sch.reorder(n, to, coo, r, ti, h, coi)
            outer = r
        parallel = sch.fuse(n, to)
    else:
        if in_tile:
            sch.reorder(coo, n, to, ti, h, r, coi)
            parallel = coo
        else:
            sch.reorder(coo, r, n, to, ti, h, coi)
            parallel = sch.fuse(coo, r)
        outer = to
    sch.compute_at(block, outer)
    loop = loops_by_variable(sch, block)
    a_k, a_ci, a_t, a_coi = loop["vk"], loop["vci"], loop.get("vt"), loop["vcoi"]
    a_r = loop.get("vr") if in_tile else None
    tile_loops = [item for item in (a_t, a_r) if item is not None]
    sch.reorder(a_k, a_ci, *tile_loops, a_coi)
    sch.set_scope(block, 0, "local")
    sch.parallel(parallel)
    # Every index into the accumulators constant: k and the tile unrolled (see
    # schedule_cpu.schedule on what a rolled one costs).
    sch.unroll(a_k)
    for item in tile_loops:
        sch.unroll(item)
    _vectorize_channels(sch, a_coi, cpu_plan.lanes)
    finish_tile(sch, store, outer, block, a_ci, cpu_plan.lanes)
    # The check runs over the same parallel split as the store.
    n, t, r, coo, h, coi = sch.get_loops(sch.get_sblock("check"))
    if cpu_plan.order == "rows":
        to, ti = sch.split(t, [None, tiling.rows])
        sch.reorder(n, to, ti, r, coo, h, coi)
        sch.parallel(sch.fuse(n, to))
    else:
        sch.reorder(coo, r, n, t, h, coi) if not in_tile else sch.reorder(coo, n, t, r, h, coi)
        sch.parallel(sch.fuse(coo, r) if not in_tile else coo)
    n, p, ci = sch.get_loops(sch.get_sblock("pad"))
    if layout.geometry.data_format == "NWC":
        sch.parallel(sch.fuse(n, p))
        sch.vectorize(ci)
    else:
        parallel_transpose(sch, n, p, ci)
    n, t, k, ci = sch.get_loops(sch.get_sblock("transform"))
    sch.parallel(sch.fuse(n, t))
    sch.vectorize(ci)
    return sch.mod["main"]
