"""The Winograd F(2,r) form of the polyphase kernel (winograd.py: the arithmetic, and
when it applies), as the TVMScript of an unscheduled TIR PrimFunc: pad, transform,
accumulate (the products), store, and the check and fix passes that recompute, in
the direct form, every pair of rows that came out non-finite.
"""
from __future__ import annotations

from ...graph.shapes import layout_shape
from . import tir
from .layout import KernelLayout
from .polyphase import round_up
from .symbolic_width import VARIABLE, SymbolicWidth
from .winograd import direct_tap_slot, pairs_of, transforms


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


def winograd_source(layout: KernelLayout, name: str = "conv1d_transpose_polyphase",
                    width: SymbolicWidth | None = None) -> str:
    """TVMScript of the unscheduled F(2, r) kernel: pad, transform, accumulate, store, fix.

    width: the kernel for every input width (symbolic_width.py, as in
    source_direct.kernel_source), with a static batch."""
    g, dec, t = layout.geometry, layout.decomposition, layout.tiling
    acc, dtype = g.accumulate_dtype, g.dtype
    N, W, O, Cout, Cin = g.batch, g.in_width, g.out_width, g.out_channels, g.in_channels
    S, rho, e = dec.stride, dec.offset, dec.row_step
    CI, COO, COT, P = layout.in_channels, layout.out_blocks, t.out_tile, layout.padded_width
    R = dec.phases[0].taps  # r of F(2, r): every phase has it (applies)
    data, _, output = transforms(R)
    M = len(data)  # products (GEMMs) per pair
    TP = pairs(layout)
    w0 = layout.input_first_row
    # Input row (of xp) of tap 0 for output row q: q + c (tap j reads q + c - j e).
    c = dec.q_first - dec.phases[0].shift - w0
    nwc = g.data_format == "NWC"
    layer_width, x_shape, o_shape = g.folded_width, g.input_shape, g.output_shape
    if width is not None:
        assert N is not None, "a symbolic width with a static batch"
        W, O, layer_width = VARIABLE, width.out_width.text(), width.layer_width.text()
        TP = width.padded_pairs(e, t.rows)
        P = f"({width.padded_pair_rows(e, t.rows)} + {layout.padded_width - layout.padded_rows})"
        x_shape = layout_shape(g.data_format, N, W, Cin)
        o_shape = layout_shape(g.data_format, N, layer_width,
                               Cout // g.folded_stride if g.folded_stride > 1 else Cout)
    # A folded kernel (folding.py) computes rows of s * Cout (phase, channel) pairs: like
    # NCW, every stage writes a copy in the kernel's own rows and channels (`yw`), which
    # the last pass ("layout") scatters to the layer's output positions.
    folded = g.folded_stride > 1
    copy = folded or not nwc

    def row(pair: str, h: str) -> str:
        """Output row (of its phase) of row h of a pair: q0 + h e, q0 = the pair's first."""
        if e == 1:
            return f"{pair} * 2 + {h}"
        return f"{pair} // {e} * {2 * e} + {pair} % {e} + {h} * {e}"

    def out_at(o, co):
        # NCW: every stage writes an NWC copy (`yw`), transposed into `out` at the end.
        return f"yw[vn, {o}, {co}]" if copy else f"out[vn, {o}, {co}]"

    x_read = f"x[vn, vp + {w0}, vci]" if nwc else f"x[vn, vci, vp + {w0}]"
    position = f"({row('vt', 'vh')}) * {S} + vr - {rho}"
    inside = tir.inside(position, -rho, O, Cout, COT)
    fix_position = f"({row('vt', 'h')}) * {S} + r - {rho}"
    inside_fix = tir.inside(fix_position, -rho, O)
    # The pair's input rows d_i = x[q0 + c - (r - 1) e + i e].
    rows = [f"xp[vn, {row('vt', '0')} + {c - (R - 1) * e + i * e}, vci]" for i in range(R + 1)]
    products = [f"acc0[vn, vt, {k}, vr, vcoo, vcoi]" for k in range(M)]
    # The fix's input row, read from `x` itself (the padded copy may be per tile).
    fix_row = f"{row('vt', 'h')} + {c + w0} - j * {e}"
    fix_x = f"x[vn, {fix_row}, ci]" if nwc else f"x[vn, ci, {fix_row}]"
    fix_slot = _select("j", [str(direct_tap_slot(R, j, layout.summed_filters))
                             for j in range(R)])
    fix_read = (f"T.if_then_else({fix_row} >= 0 and {fix_row} < {W}, "
                f"T.Cast(\"{acc}\", {fix_x}), T.Cast(\"{acc}\", 0))")
    lines = tir.signature(name, x_shape, layout.filters_shape, o_shape, dtype, acc,
                          [f"{VARIABLE} = T.int32()"] if width is not None else [])
    lines += [
        f"    flags = T.sblock_alloc_buffer(({N}, {TP}, {S}, {COO}), \"int32\")",
        *([f"    yw = T.sblock_alloc_buffer(({N}, {O}, {Cout}), \"{dtype}\")"] if copy else []),
        # Pad, transform and the two GEMM stages in a scope of their own: the check reads
        # `out`, which the fix then writes, and a scope with such a read before a write
        # is no "stage pipeline" for compute_at. In it, a schedule may compute the
        # transform (and pad) per tile of rows; the fix reads the input itself.
        "    with T.sblock(\"gemm\"):",
        f"        xp = T.sblock_alloc_buffer(({N}, {P}, {CI}), \"{acc}\")",
        f"        xw = T.sblock_alloc_buffer(({N}, {TP}, {M}, {CI}), \"{acc}\")",
        f"        for n, p, ci in T.grid({N}, {P}, {CI}):",
        "            with T.sblock(\"pad\"):",
        "                vn, vp, vci = T.axis.remap(\"SSS\", [n, p, ci])",
        f"                xp[vn, vp, vci] = T.if_then_else(vp + {w0} >= 0 and vp + {w0} < {W} "
        f"and vci < {Cin}, T.Cast(\"{acc}\", {x_read}), T.Cast(\"{acc}\", 0))",
        # xw[k] = (B^T d)_k; for F(2,2) x[u-1] - x[u], x[u], x[u+1] - x[u].
        f"        for n, t, k, ci in T.grid({N}, {TP}, {M}, {CI}):",
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
        f"        acc0 = T.sblock_alloc_buffer(({N}, {TP}, {M}, {S}, {COO}, {COT}), \"{acc}\")",
        f"        for n, t, k, r, coo, coi, ci in T.grid({N}, {TP}, {M}, {S}, {COO}, {COT}, {CI}):",
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
        f"T.isfinite({out_at(f'T.max(T.min({position}, {O} - 1), 0)', f'T.min(vcoo * {COT} + vcoi, {Cout - 1})')}), 0, 1))",
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
    if folded:
        # Kernel row q, channel ch is the layer's output position q*s + phase - offset
        # (folding.py: phase-major channels in NWC, channel-major in NCW).
        s0, c0 = g.folded_stride, Cout // g.folded_stride
        if c0 == 1:
            phase, channel = "vch", "0"
        elif nwc:
            phase, channel = f"vch // {c0}", f"vch % {c0}"
        else:
            phase, channel = f"vch % {s0}", f"vch // {s0}"
        at = f"vq * {s0} + {phase} - {g.folded_offset}"
        layer_out = f"out[vn, {at}, {channel}]" if nwc else f"out[vn, {channel}, {at}]"
        lines += [
            f"    for n, q, ch in T.grid({N}, {O}, {Cout}):",
            "        with T.sblock(\"layout\"):",
            "            vn, vq, vch = T.axis.remap(\"SSS\", [n, q, ch])",
            f"            if {at} >= 0 and {at} < {layer_width}:",
            f"                {layer_out} = yw[vn, vq, vch]",
        ]
    elif not nwc:
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
