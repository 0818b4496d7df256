"""The direct form of the polyphase kernel (polyphase.py), as the TVMScript of an
unscheduled TIR PrimFunc: pad, then per phase group accumulate + store.

Every index below is affine in the loop variables (MetaSchedule miscompiled a
floor-division form of this kernel: max error 7.28, NaN with one thread, reported fast).
Input rows outside [0, W) come from a zero-padded copy of the input (`pad`), which is
also where the NCW transpose and the float16 -> float32 widening happen; the schedule
places that copy per tile.
"""
from __future__ import annotations

from ...graph.shapes import layout_shape
from . import tir
from .layout import KernelLayout
from .symbolic_width import VARIABLE, SymbolicWidth


def kernel_source(layout: KernelLayout, name: str = "conv1d_transpose_polyphase",
                  width: SymbolicWidth | None = None, ncw_copy: bool = False) -> str:
    """TVMScript of the unscheduled kernel: pad, then per phase group accumulate + store.

    width: the kernel for every input width (symbolic_width.py): `layout` is laid out at
    a reference width, and each width-dependent size is written as an expression of the
    PrimFunc's variable `width`.

    ncw_copy (NCW, not folded): the stores write an NWC copy of the output (`yw`), which
    a last block (`layout`) transposes into `out`, as the Winograd form does in NCW,
    instead of storing each vector of channels to as many output rows. It pays where
    those rows are a multiple of 4 KiB apart and so share one set of L1 lines:
    width_variants.py takes it for such widths."""
    g, dec, t = layout.geometry, layout.decomposition, layout.tiling
    acc, dtype = g.accumulate_dtype, g.dtype
    N, W, O, Cout = g.batch, g.in_width, g.out_width, g.out_channels
    S, e, rho = dec.stride, dec.row_step, dec.offset
    CI, QP, COO, COT, P = layout.in_channels, layout.padded_rows, layout.out_blocks, \
        t.out_tile, layout.padded_width
    w0 = layout.input_first_row
    x_shape, o_shape = g.input_shape, g.output_shape
    nwc = g.data_format == "NWC"
    rows, layer_width = dec.rows, g.folded_width
    if width is not None:
        W, O = VARIABLE, width.out_width.text()
        rows, layer_width = width.rows.text(), width.layer_width.text()
        QP = width.padded_rows(t.rows)
        P = f"({QP} + {layout.padded_width - layout.padded_rows})"
        x_shape = layout_shape(g.data_format, N, W, g.in_channels)
        o_shape = layout_shape(g.data_format, N, layer_width,
                               Cout // g.folded_stride if g.folded_stride > 1 else Cout)

    if ncw_copy and (nwc or g.folded_stride > 1):
        raise ValueError("ncw_copy is for an NCW kernel that is not folded")

    def out_at(n, o, co):
        if ncw_copy:
            return f"yw[{n}, {o}, {co}]"
        return f"out[{n}, {o}, {co}]" if nwc else f"out[{n}, {co}, {o}]"

    def store_lines(index, position, lowest):
        """The store of one accumulator at kernel output `position` (its channel
        `vcoo * COT + vcoi`), guarded to the output: a folded kernel's channel is a
        (phase, channel) pair of the layer (folding.py: phase-major in NWC, so a vector
        of them is one run of the output; channel-major in NCW, runs of s positions)."""
        channel = f"vcoo * {COT} + vcoi"
        value = f"T.Cast(\"{dtype}\", acc{index}[vn, vq, vr, vcoo, vcoi])"
        if g.folded_stride == 1:
            return (f"if {tir.inside(position, lowest, O, Cout, COT)}:",
                    f"    {out_at('vn', position, channel)} = {value}")
        s0, c0 = g.folded_stride, Cout // g.folded_stride
        if c0 == 1:
            phase, layer_channel = f"({channel})", "0"
        elif nwc:
            phase, layer_channel = f"({channel}) // {c0}", f"({channel}) % {c0}"
        else:
            phase, layer_channel = f"({channel}) % {s0}", f"({channel}) // {s0}"
        at = f"({position}) * {s0} + {phase} - {g.folded_offset}"
        terms = [f"{at} >= 0"] if g.folded_offset else []
        terms += [f"{at} < {layer_width}", f"{channel} < {Cout}"]
        return (f"if {' and '.join(terms)}:",
                f"    {out_at('vn', at, layer_channel)} = {value}")

    x_read = f"x[vn, vp + {w0}, vci]" if nwc else f"x[vn, vci, vp + {w0}]"
    # Symbolic batch (an ONNX dim_param, or a batch of 0, which TVM's importer makes
    # symbolic): one kernel serves every batch size. A symbolic width: every width (an
    # int32 variable, as the static kernel's loops are).
    variables = []
    if N is None:
        N = "batch"
        variables.append("batch = T.int64()")
        x_shape = tuple(N if i == 0 else d for i, d in enumerate(x_shape))
        o_shape = tuple(N if i == 0 else d for i, d in enumerate(o_shape))
    if width is not None:
        variables.append(f"{VARIABLE} = T.int32()")
    lines = tir.signature(name, x_shape, layout.filters_shape, o_shape, dtype, acc, variables)
    lines += [
        f"    xp = T.sblock_alloc_buffer(({N}, {P}, {CI}), \"{acc}\")",
    ]
    if ncw_copy:
        lines.append(f"    yw = T.sblock_alloc_buffer(({N}, {O}, {Cout}), \"{dtype}\")")
    for index, (_, _, phases) in enumerate(layout.groups):
        lines.append(f"    acc{index} = T.sblock_alloc_buffer(({N}, {QP}, {len(phases)}, {COO}, "
                     f"{COT}), \"{acc}\")")
    if layout.groups:
        lines += [
            f"    for n, p, ci in T.grid({N}, {P}, {CI}):",
            "        with T.sblock(\"pad\"):",
            "            vn, vp, vci = T.axis.remap(\"SSS\", [n, p, ci])",
            f"            xp[vn, vp, vci] = T.if_then_else(vp + {w0} >= 0 and vp + {w0} < {W} "
            f"and vci < {g.in_channels}, T.Cast(\"{acc}\", {x_read}), T.Cast(\"{acc}\", 0))",
        ]
    for index, (accumulate, store, phases) in enumerate(layout.groups):
        first = dec.phases[phases[0]]
        beta = (dec.phases[phases[1]].shift - first.shift) if len(phases) > 1 else 0
        # Row of xp for block iteration (vq, vr, vj): q - shift(r) - j*e - w0.
        row = f"vq + {dec.q_first - first.shift - w0} - vr * {beta} - vj * {e}"
        phase = f"vr + {phases[0]}"
        lines += [
            f"    for n, qq, r, coo, coi, j, ci in T.grid({N}, {QP}, {len(phases)}, {COO}, "
            f"{COT}, {first.taps}, {CI}):",
            f"        with T.sblock(\"{accumulate}\"):",
            "            vn, vq, vr, vcoo, vcoi, vj, vci = T.axis.remap(\"SSSSSRR\", "
            "[n, qq, r, coo, coi, j, ci])",
            "            with T.init():",
            f"                acc{index}[vn, vq, vr, vcoo, vcoi] = T.Cast(\"{acc}\", 0)",
            f"            acc{index}[vn, vq, vr, vcoo, vcoi] = acc{index}[vn, vq, vr, vcoo, vcoi] "
            f"+ xp[vn, {row}, vci] * {layout.filter_at('vcoo', phase, 'vj', 'vci', 'vcoi')}",
            f"    for n, qq, r, coo, coi in T.grid({N}, {QP}, {len(phases)}, {COO}, {COT}):",
            f"        with T.sblock(\"{store}\"):",
            "            vn, vq, vr, vcoo, vcoi = T.axis.remap(\"SSSSS\", [n, qq, r, coo, coi])",
            *("            " + line for line in store_lines(
                index, f"vq * {S} + vr + {phases[0] - rho}", phases[0] - rho)),
        ]
    for p in dec.phases:
        if p.taps:
            continue
        lines += [
            f"    for n, qq, co in T.grid({N}, {rows}, {Cout}):",
            f"        with T.sblock(\"zero_r{p.r}\"):",
            "            vn, vq, vco = T.axis.remap(\"SSS\", [n, qq, co])",
            f"            if {tir.inside(f'vq * {S} + {p.r - rho}', p.r - rho, O)}:",
            f"                {out_at('vn', f'vq * {S} + {p.r - rho}', 'vco')} = T.Cast(\"{dtype}\", 0)",
        ]
    if ncw_copy:
        lines += [
            f"    for n, co, o in T.grid({N}, {Cout}, {O}):",
            "        with T.sblock(\"layout\"):",
            "            vn, vco, vo = T.axis.remap(\"SSS\", [n, co, o])",
            "            out[vn, vco, vo] = yw[vn, vo, vco]",
        ]
    return "\n".join(lines) + "\n"
