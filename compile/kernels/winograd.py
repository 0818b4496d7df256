"""The Winograd forms of the polyphase kernel: F(2,2) and F(2,3), fewer multiplies.

Where every phase has two taps, one row apart, with one input shift (d = 1 and K = 2s:
every HiFi-GAN and Demucs upsampler), output rows `q = 2t` and `2t + 1` of a phase are,
with `u = 2t + c` the input row of tap 0 and G0, G1 the taps' [in, out] matrices,

    y[2t]     = x[u] G0   + x[u-1] G1  = m1 + m2
    y[2t + 1] = x[u+1] G0 + x[u] G1    = m2 + m3

    m1 = (x[u-1] - x[u]) G1,   m2 = x[u] (G0 + G1),   m3 = (x[u+1] - x[u]) G0

(Winograd's minimal filtering, Lavin and Gray 2016, arXiv:1509.09308). Three GEMMs over
half the rows replace two over all of them: 3/4 of the multiply-adds, for a transform
of the input (two subtractions per pair and channel) and of the filters (once, at
compile time). With three taps per phase (K = 3s, or the dilated stride-1 layer of
WaveNet-like decoders) F(2,3) does four GEMMs where the direct form does six: 2/3. Taps
e = d/gcd(s, d) rows apart pair row q with q + e. Both forms' coefficients are +-1 on the
data (1/2 on F(2,3)'s filters, exact in binary), and each output is a sum over its own
taps' input rows only, so rounding stays at the direct form's order (checked against the
reference like every kernel). F(3,2) (3 rows from 4 products) was tried and left out:
its outputs mix in rows outside their taps, so a row with no input (output_padding, a
silent stretch) came out at 4e-6 instead of 0, over float32's tolerance, for a gain of
at most a tenth in a trial version.

The transform would break one exact property: an Inf in the input gives Inf - Inf = NaN
in m, where TensorFlow's direct sum has +-Inf, and a huge finite pair may overflow in a
difference. Both show as a non-finite output, and a non-finite direct result is always
non-finite here too, so a last pass ("fix") recomputes, in the direct form, every pair
of rows that came out with a non-finite value: TensorFlow's answer, at the cost of a
scan of the output.
"""
from __future__ import annotations

import numpy as np

from . import tir
from .polyphase import Geometry, KernelLayout, decompose, round_up


# F(2, r) for correlation with r taps, y_h = sum_i d_(h+i) g_i over the r + 1 input rows
# d_i = x[u + i e] of one pair (g_i = G_(r-1-i): tap j reads row q + c - j e):
#     y = A^T [(G g) . (B^T d)]
# as (B^T, G, A^T). F(2,2) is the form above; F(2,3) is Lavin and Gray's (points 0, +-1,
# infinity): 4 products for 6. In both, each output's sum uses only the input rows of its
# own taps (a zero input window gives an exact zero, as in the direct form), every data
# and output coefficient is +-1, and F(2,3)'s filter rows carry a 1/2, exact in binary.
TRANSFORMS = {
    2: (((1, -1, 0), (0, 1, 0), (0, -1, 1)),
        ((1, 0), (1, 1), (0, 1)),
        ((1, 1, 0), (0, 1, 1))),
    3: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
}


def applies(geometry: Geometry) -> bool:
    """Whether a Winograd form exists for this shape (and this kernel generator has it):
    every phase with the same two or three taps (F(2,2), F(2,3)), equally spaced rows
    apart (any dilation), one shared input shift, a static batch (either layout), and
    more than one input channel (the transforms cost about what they save on a
    reduction of one channel, whose tile has no channel loop to block), not folded
    (folding.py: its store is the direct form's)."""
    dec = decompose(geometry)
    return (geometry.batch is not None and geometry.in_channels > 1
            and geometry.folded_stride == 1 and dec.uniform_shift_step() == 0
            and len({p.taps for p in dec.phases}) == 1 and dec.phases[0].taps in TRANSFORMS
            and dec.rows >= 2)


def filter_slots(r: int, summed: bool = False) -> int:
    """Packed filter matrices of F(2, r): the r + 1 products', then the direct taps that
    are none of them (F(2,3)'s middle tap G1), which the fix pass needs exactly. F(2,2)
    with `summed` (KernelLayout.summed_filters): the direct taps G1 and G0 alone."""
    return 2 if summed else r + 1 + (r - 2)


def transform_filters(packed: np.ndarray, summed: bool = False) -> np.ndarray:
    """Direct packed filters `[blocks, r, in, s, out_tile]` (taps G0 .. G(r-1)) ->
    `[blocks, filter_slots(r, summed), in, s, out_tile]`: (G g) then the missing direct
    taps. F(2,2): (G1, G0 + G1, G0), or (G1, G0) with `summed`; F(2,3): (G2,
    (G0 + G1 + G2)/2, (G0 - G1 + G2)/2, G0, G1). Each is rounded once, from the exact
    sum."""
    r = packed.shape[1]
    g = [packed[:, r - 1 - i].astype(np.float64) for i in range(r)]
    rows = [sum(c * gi for c, gi in zip(coefficients, g)) for coefficients in TRANSFORMS[r][1]]
    rows += [packed[:, j] for j in range(1, r - 1)]
    if summed:
        assert r == 2, r
        rows = [rows[0], rows[2]]
    return np.ascontiguousarray(np.stack(rows, axis=1).astype(packed.dtype))


def _filter(layout: KernelLayout, slot: str) -> str:
    return layout.filter_at("vcoo", "vr", slot, "vci", "vcoi")


def product_filter(layout: KernelLayout, k: str) -> str:
    """TVMScript of product k's filter value at (vcoo, vr, vci, vcoi). With
    summed_filters, F(2,2)'s products 0 and 2 read slots 0 (G1) and 1 (G0), and product 1
    reads `fsum`, their sum (block "sum_filters", which the schedule computes per block
    of the reduction). k is unrolled, so the select folds away."""
    if not layout.summed_filters:
        return _filter(layout, k)
    return f"T.if_then_else({k} == 1, fsum[vcoo, vr, vci, vcoi], {_filter(layout, f'{k} // 2')})"


def blocks_reduction(cpu_plan, stride: int) -> bool:
    """Whether `schedule` runs a plan's reduction in blocks, its filters streamed from
    beyond L2 (what summed_filters is for)."""
    in_tile = cpu_plan.phases_in_tile and stride > 1
    return (cpu_plan.winograd and cpu_plan.blocked and cpu_plan.order != "rows"
            and not in_tile and cpu_plan.chunk_tiles > 0)


def stored_slot(layout: KernelLayout, k):
    """The packed slot whose next block product k's pass prefetches (prefetch.py); the
    direct form's taps are their own slots. With summed_filters, products 0 and 2 read
    slots 0 and 1, and product 1, which reads the block's sum, fetches slot 0 again."""
    return k // 2 if layout.summed_filters else k


def direct_tap_slot(r: int, j: int, summed: bool = False) -> int:
    """Slot of direct tap G_j among the packed matrices (for the fix pass)."""
    if summed:
        return r - 1 - j
    return {0: r, r - 1: 0}.get(j, r + j)


def padded_rows(dec, tile_pairs: int) -> int:
    """Output rows a kernel of `tile_pairs`-pair tiles covers: pairs (q, q + e) of rows,
    e = row_step, in blocks of 2e rows, the pairs rounded up to whole tiles."""
    e = dec.row_step
    return 2 * e * -(-round_up(pairs_of(dec), tile_pairs) // e)


def pairs_of(dec) -> int:
    """Pairs (q, q + e) that cover a decomposition's rows, e = row_step."""
    return -(-dec.rows // (2 * dec.row_step)) * dec.row_step


def pairs(layout: KernelLayout) -> int:
    """Pairs in a kernel: rounded up to whole tiles."""
    return round_up(pairs_of(layout.decomposition), layout.tiling.rows)


def _combination(coefficients, terms) -> str:
    """`sum(c * term)` for +-1 coefficients, as TVMScript."""
    out = ""
    for c, term in zip(coefficients, terms):
        if c:
            assert c in (1, -1), c
            sign = (" + " if c > 0 else " - ") if out else ("" if c > 0 else "-")
            out += sign + term
    return out


def _select(variable: str, expressions: list[str]) -> str:
    """The expression for `variable == i` (a loop the schedule unrolls)."""
    out = expressions[-1]
    for i in range(len(expressions) - 2, -1, -1):
        out = f"T.if_then_else({variable} == {i}, {expressions[i]}, {out})"
    return out


def winograd_source(layout: KernelLayout, name: str = "conv1d_transpose_polyphase") -> str:
    """TVMScript of the unscheduled F(2, r) kernel: pad, transform, accumulate, store, fix."""
    g, dec, t = layout.geometry, layout.decomposition, layout.tiling
    acc, dtype = g.accumulate_dtype, g.dtype
    N, W, O, Cout, Cin = g.batch, g.in_width, g.out_width, g.out_channels, g.in_channels
    S, rho, e = dec.stride, dec.offset, dec.row_step
    CI, COO, COT, P = layout.in_channels, layout.out_blocks, t.out_tile, layout.padded_width
    R = dec.phases[0].taps  # r of F(2, r): every phase has it (applies)
    data, _, output = TRANSFORMS[R]
    TP = pairs(layout)
    w0 = layout.input_first_row
    # Input row (of xp) of tap 0 for output row q: q + c (tap j reads q + c - j e).
    c = dec.q_first - dec.phases[0].shift - w0
    nwc = g.data_format == "NWC"

    def row(pair: str, h: str) -> str:
        """Output row (of its phase) of row h of a pair: q0 + h e, q0 = the pair's first."""
        if e == 1:
            return f"{pair} * 2 + {h}"
        return f"{pair} // {e} * {2 * e} + {pair} % {e} + {h} * {e}"

    def out_at(o, co):
        # NCW: every stage writes an NWC copy (`yw`), transposed into `out` at the end.
        return f"out[vn, {o}, {co}]" if nwc else f"yw[vn, {o}, {co}]"

    x_read = f"x[vn, vp + {w0}, vci]" if nwc else f"x[vn, vci, vp + {w0}]"
    position = f"({row('vt', 'vh')}) * {S} + vr - {rho}"
    inside = tir.inside(position, -rho, O, Cout, COT)
    fix_position = f"({row('vt', 'h')}) * {S} + r - {rho}"
    inside_fix = tir.inside(fix_position, -rho, O)
    # The pair's input rows d_i = x[q0 + c - (r - 1) e + i e].
    rows = [f"xp[vn, {row('vt', '0')} + {c - (R - 1) * e + i * e}, vci]" for i in range(R + 1)]
    products = [f"acc0[vn, vt, {k}, vr, vcoo, vcoi]" for k in range(R + 1)]
    # The fix's input row, read from `x` itself (the padded copy may be per tile).
    fix_row = f"{row('vt', 'h')} + {c + w0} - j * {e}"
    fix_x = f"x[vn, {fix_row}, ci]" if nwc else f"x[vn, ci, {fix_row}]"
    fix_slot = _select("j", [str(direct_tap_slot(R, j, layout.summed_filters))
                             for j in range(R)])
    fix_read = (f"T.if_then_else({fix_row} >= 0 and {fix_row} < {W}, "
                f"T.Cast(\"{acc}\", {fix_x}), T.Cast(\"{acc}\", 0))")
    lines = [
        "@T.prim_func(private=True, s_tir=True)",
        f"def {name}(x: T.Buffer({g.input_shape}, \"{dtype}\"), "
        f"filters: T.Buffer({layout.filters_shape}, \"{acc}\"), "
        f"out: T.Buffer({g.output_shape}, \"{dtype}\")):",
        "    T.func_attr({\"tirx.noalias\": True})",
        f"    flags = T.sblock_alloc_buffer(({N}, {TP}, {S}, {COO}), \"int32\")",
        *([] if nwc else [f"    yw = T.sblock_alloc_buffer(({N}, {O}, {Cout}), \"{dtype}\")"]),
        # Pad, transform and the two GEMM stages in a scope of their own: the check reads
        # `out`, which the fix then writes, and a scope with such a read before a write
        # is no "stage pipeline" for compute_at. In it, a schedule may compute the
        # transform (and pad) per tile of rows; the fix reads the input itself.
        "    with T.sblock(\"gemm\"):",
        f"        xp = T.sblock_alloc_buffer(({N}, {P}, {CI}), \"{acc}\")",
        f"        xw = T.sblock_alloc_buffer(({N}, {TP}, {R + 1}, {CI}), \"{acc}\")",
        f"        for n, p, ci in T.grid({N}, {P}, {CI}):",
        "            with T.sblock(\"pad\"):",
        "                vn, vp, vci = T.axis.remap(\"SSS\", [n, p, ci])",
        f"                xp[vn, vp, vci] = T.if_then_else(vp + {w0} >= 0 and vp + {w0} < {W} "
        f"and vci < {Cin}, T.Cast(\"{acc}\", {x_read}), T.Cast(\"{acc}\", 0))",
        # xw[k] = (B^T d)_k; for F(2,2) x[u-1] - x[u], x[u], x[u+1] - x[u].
        f"        for n, t, k, ci in T.grid({N}, {TP}, {R + 1}, {CI}):",
        "            with T.sblock(\"transform\"):",
        "                vn, vt, vk, vci = T.axis.remap(\"SSSS\", [n, t, k, ci])",
        f"                xw[vn, vt, vk, vci] = "
        f"{_select('vk', [_combination(b, rows) for b in data])}",
        *([] if not layout.summed_filters else [
            # G0 + G1: a float add rounds the exact sum once, as transform_filters
            # rounds it, so the output keeps the packed sum's bits.
            f"        fsum = T.sblock_alloc_buffer(({COO}, {S}, {CI}, {COT}), \"{acc}\")",
            f"        for coo, r, ci, coi in T.grid({COO}, {S}, {CI}, {COT}):",
            "            with T.sblock(\"sum_filters\"):",
            "                vcoo, vr, vci, vcoi = T.axis.remap(\"SSSS\", [coo, r, ci, coi])",
            f"                fsum[vcoo, vr, vci, vcoi] = {_filter(layout, '0')} + "
            f"{_filter(layout, '1')}"]),
        f"        acc0 = T.sblock_alloc_buffer(({N}, {TP}, {R + 1}, {S}, {COO}, {COT}), \"{acc}\")",
        f"        for n, t, k, r, coo, coi, ci in T.grid({N}, {TP}, {R + 1}, {S}, {COO}, {COT}, {CI}):",
        "            with T.sblock(\"accumulate\"):",
        "                vn, vt, vk, vr, vcoo, vcoi, vci = T.axis.remap(\"SSSSSSR\", "
        "[n, t, k, r, coo, coi, ci])",
        "                with T.init():",
        f"                    acc0[vn, vt, vk, vr, vcoo, vcoi] = T.Cast(\"{acc}\", 0)",
        "                acc0[vn, vt, vk, vr, vcoo, vcoi] = acc0[vn, vt, vk, vr, vcoo, vcoi] "
        f"+ xw[vn, vt, vk, vci] * {product_filter(layout, 'vk')}",
        # y_h = (A^T m)_h, h unrolled by the schedule.
        f"        for n, t, h, r, coo, coi in T.grid({N}, {TP}, 2, {S}, {COO}, {COT}):",
        "            with T.sblock(\"store\"):",
        "                vn, vt, vh, vr, vcoo, vcoi = T.axis.remap(\"SSSSSS\", [n, t, h, r, coo, coi])",
        f"                if {inside}:",
        f"                    {out_at(position, f'vcoo * {COT} + vcoi')} = T.Cast(\"{dtype}\", "
        f"{_select('vh', [_combination(a, products) for a in output])})",
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
        # The direct form for a pair of rows with a non-finite output (tap j's matrix in
        # slot direct_tap_slot(R, j)); an opaque block, run only for such pairs. Parallel
        # in the source: it reads what it writes (out), which the schedule's parallel
        # refuses.
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
        f"                        for j, ci in T.grid({R}, {Cin}):",
        f"                            total[0] = total[0] + {fix_read} * "
        f"{layout.filter_at(f'co // {COT}', 'r', fix_slot, 'ci', f'co % {COT}')}",
        f"                        {out_at(fix_position, 'co')} = "
        f"T.Cast(\"{dtype}\", total[0])",
    ]
    if not nwc:
        # Storing a vector of channels to 16 output rows (NCW) costs more than writing
        # the NWC copy and transposing it in 16 x 16 tiles: ncw-up2 in F(2,2) with the
        # same tile (4 vectors, "filters" order), kernel ms, interleaved in one process,
        # Zen 4, 2026-11-26: 8.32 -> 7.24. The check and fix work on the copy.
        lines += [
            f"    for n, co, o in T.grid({N}, {Cout}, {O}):",
            "        with T.sblock(\"layout\"):",
            "            vn, vco, vo = T.axis.remap(\"SSS\", [n, co, o])",
            "            out[vn, vco, vo] = yw[vn, vo, vco]",
        ]
    return "\n".join(lines) + "\n"


def schedule(func, layout: KernelLayout, cpu_plan):
    """The CPU schedule of `winograd_source`'s kernel, after schedule_cpu.schedule: the
    same register tile (`rows` pairs x channel vectors, optionally x phases), with the
    r + 1 GEMMs (k) one after another inside it, each over the input channels."""
    import tvm

    from .tir import finish_tile, loops_by_variable, parallel_transpose, vectorize_channels

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
    if not nwc:
        n, co, o = sch.get_loops(sch.get_sblock("layout"))
        parallel_transpose(sch, n, o, co)
    if prefetches:
        from . import prefetch
        return prefetch.insert(sch.mod["main"], sch, prefetches, rows="vt", tap="vk")
    return sch.mod["main"]
