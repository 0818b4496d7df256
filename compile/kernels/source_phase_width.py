"""The phase width form of a strided NCW layer: the width form (source_width.py),
vectorized along the width, for a stride s > 1, as the TVMScript of an unscheduled
PrimFunc.

A channel-vectorized kernel reads and writes NCW through transposes inside the kernel,
which cost a single NCW layer more than the arithmetic on wide, few-channel layers
(HiFi-GAN's last upsamplers: 1.7 of 5.3 ms, docs/design/variable-length.md). Here the
output position `o = q*s + p` is split into its phase p and row q. With dilation 1 and
`J = K/s` taps in every phase, tap k of input row w lands at `o = w*s - pad_begin + k`,
so phase p is a stride-1 correlation over the rows:

    out[n, co, q*s + p] = sum_{ci, j < J} f[k0(p) + (J-1-j)*s, co, ci] * x[n, ci, q + e(p) + j]

with `k0(p) = (p + pad_begin) mod s` and `e(p) = (p + pad_begin) // s - (J - 1)`. A
register tile is R output channels x s phases x VL rows (V vectors of lanes); per input
channel and tap it broadcasts R*s packed filter values and loads the VL rows it reads
(the phases share them: e(p) takes at most two values), so the input is read as NCW
stores it, with no transpose and no zero-padded copy.

The rows split in two:
- the interior `[qa, qb)`, where every phase's every read is inside [0, W) and every
  phase's output inside [0, O): tiles of VL rows starting at `min(qa + t*VL, qb - VL)`
  (the last overlaps the one before instead of running past the end), no guard;
- the few edge rows outside it (about (K/s - 1) at each end), summed per output with a
  guarded read and a guarded store: no vector, but a handful of rows.

Every phase must have the same taps (K a multiple of s, dilation 1): a phase padded with
zero taps would multiply an input Inf by zero and give a NaN where TensorFlow has none
(polyphase.py). Output channels are padded to whole tiles with zero filters and never
stored, as in the width form.

With a symbolic width (symbolic_width.py), qa and the edge rows are constants, qb and the
row count are `W + constant`, and the tile count is `ceil((qb - qa) / VL)`: one kernel
serves every width from `long_from` on (an interior of at least one tile); narrower
inputs take the edge nest for every row, its blocks named `..._short`. Nothing here
imports TVM.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import tir
from .polyphase import Geometry
from .symbolic_width import VARIABLE, Affine, layer_at

LANES = 16  # float32 lanes of an AVX-512 vector


@dataclasses.dataclass(frozen=True)
class PhaseWidthLayout:
    """Sizes of a phase width kernel: tiles of `rows` output channels x s phases x
    `vectors` vectors of `lanes` rows."""

    geometry: Geometry
    rows: int  # R: output channels per register tile
    vectors: int  # V
    lanes: int = LANES

    @property
    def stride(self) -> int:
        return self.geometry.stride

    @property
    def taps(self) -> int:  # J: taps per phase
        return self.geometry.kernel_width // self.stride

    @property
    def tile(self) -> int:  # VL: rows per tile
        return self.vectors * self.lanes

    def offset(self, phase: int) -> int:
        """e(p): phase p's tap j of row q reads input row q + e(p) + j."""
        return (phase + self.geometry.pad_begin) // self.stride - (self.taps - 1)

    def first_tap(self, phase: int) -> int:  # k0(p)
        return (phase + self.geometry.pad_begin) % self.stride

    @property
    def out_blocks(self) -> int:
        return -(-self.geometry.out_channels // self.rows)

    @property
    def filters_shape(self) -> tuple[int, int, int, int, int]:
        g = self.geometry
        return (self.out_blocks, g.in_channels, self.taps, self.stride, self.rows)

    @property
    def all_rows(self) -> int:
        """Q: rows with at least one output, ceil(O / s)."""
        return -(-self.geometry.out_width // self.stride)

    @property
    def interior(self) -> tuple[int, int]:
        """[qa, qb): the rows whose reads are all inside the input and whose phases all
        land inside the output (qb <= qa when there are none)."""
        g = self.geometry
        qa = max(0, -self.offset(0))
        qb = min(g.out_width // self.stride,
                 g.in_width - self.offset(self.stride - 1) - (self.taps - 1))
        return qa, qb

    @property
    def long(self) -> bool:
        """Whether the interior holds a whole tile (else every row is an edge row)."""
        qa, qb = self.interior
        return qb - qa >= self.tile

    @property
    def edges(self) -> int:
        """Rows outside the interior (all rows when it holds no tile)."""
        qa, qb = self.interior
        return self.all_rows - (qb - qa) if self.long else self.all_rows


def fits(geometry: Geometry) -> bool:
    """Whether a layer has the phase width form: stride > 1, dilation 1, K a multiple of
    the stride, NCW, not folded."""
    g = geometry
    return (g.stride > 1 and g.dilation == 1 and g.kernel_width % g.stride == 0
            and g.data_format == "NCW" and g.folded_stride == 1)


def pack_filters(filters: np.ndarray, layout: PhaseWidthLayout) -> np.ndarray:
    """TF-layout `[K, Cout, Cin]` ConvTranspose filters -> `[out_blocks, Cin, J, s, R]`:
    [b, ci, j, p, r] = f[k0(p) + (J-1-j)*s, b*R + r, ci], zero for padded channels."""
    g = layout.geometry
    K, cout, cin = filters.shape
    s, J, R = layout.stride, layout.taps, layout.rows
    f = np.asarray(filters, dtype=g.accumulate_dtype)
    taps = np.array([[layout.first_tap(p) + (J - 1 - j) * s for p in range(s)]
                     for j in range(J)])  # [J, s]
    picked = f[taps]  # [J, s, Cout, Cin]
    packed = np.zeros((J, s, layout.out_blocks * R, cin), g.accumulate_dtype)
    packed[:, :, :cout] = picked
    packed = packed.reshape(J, s, layout.out_blocks, R, cin).transpose(2, 4, 0, 1, 3)
    return np.ascontiguousarray(packed)


@dataclasses.dataclass(frozen=True)
class SymbolicSizes:
    """The width-dependent sizes of the phase width form for every input width W
    (output `s*W + c`): qb and the row count Q are W + constant, qa and the edge rows
    constants, from `long_from` (the narrowest input whose interior holds a tile) on;
    `short`: some narrower input has a non-empty output."""

    long_from: int
    short: bool
    qa: int
    qb: Affine
    all_rows: Affine


def symbolic_sizes(layout: PhaseWidthLayout) -> SymbolicSizes | None:
    """The sizes of `layout` (laid out at a reference width) at every input width W, its
    output `s*W + c` as at the reference width, or None where they are not affine in W
    from `long_from` on (checked at every width up to past every constant and at a few
    far ones)."""
    geo = layout.geometry
    if not fits(geo):
        return None
    c = geo.out_width - geo.stride * geo.in_width
    at = layer_at(geo, c)

    def sizes(w):
        static = dataclasses.replace(layout, geometry=at(w))
        qa, qb = static.interior
        return static.long, qa, qb, static.all_rows

    lowest = next(w for w in range(1, abs(c) + 2) if geo.stride * w + c >= 1)
    first = next((w for w in range(lowest, lowest + 4 * layout.tile + geo.kernel_width + 64)
                  if sizes(w)[0]), None)
    if first is None:
        return None
    _, qa, qb0, rows0 = sizes(first)
    _, _, qb1, rows1 = sizes(first + 1)
    qb, rows = (Affine(b - a, a - (b - a) * first) for a, b in ((qb0, qb1), (rows0, rows1)))
    if qb.scale != 1 or rows.scale != 1:
        return None
    reach = 2 * (layout.tile + geo.kernel_width + abs(geo.pad_begin) + abs(c)) + 2
    for w in [*range(first, first + reach), *(first + 10 ** e for e in range(3, 8))]:
        if sizes(w) != (True, qa, qb.at(w), rows.at(w)):
            return None
    return SymbolicSizes(first, first > lowest, qa, qb, rows)


def phase_width_source(layout: PhaseWidthLayout, name: str = "conv1d_transpose_phase_width",
                       symbolic: bool = False) -> str:
    """TVMScript of the unscheduled kernel: the interior's tiles (accumulate, store)
    and the edge rows (edge, edge_store); `symbolic`: for every input width (the
    PrimFunc's variable `width`), with a `short` nest of edge rows only for inputs whose
    interior holds no tile."""
    geo = layout.geometry
    N, CI, CO = geo.batch, geo.in_channels, geo.out_channels
    if not symbolic:
        lines = tir.signature(name, geo.input_shape, layout.filters_shape, geo.output_shape,
                              geo.dtype, geo.accumulate_dtype)
        qa, qb = layout.interior
        if layout.long:
            allocations, body = _interior(layout, "", qa, str(qb))
            if layout.edges:
                edge_allocations, edge_body = _edges(layout, "", qa, str(qb), layout.edges,
                                                     geo.out_width, geo.in_width)
                allocations, body = allocations + edge_allocations, body + edge_body
        else:
            allocations, body = _edges(layout, "", None, None, layout.all_rows,
                                       geo.out_width, geo.in_width)
        return "\n".join(lines + allocations + ["    " + line for line in body]) + "\n"
    sizes = symbolic_sizes(layout)
    if sizes is None:
        raise ValueError(f"no symbolic-width form of the phase width kernel for {geo}")
    O = Affine(geo.stride, geo.out_width - geo.stride * geo.in_width).text()
    lines = tir.signature(name, (N, CI, VARIABLE), layout.filters_shape, (N, CO, O),
                          geo.dtype, geo.accumulate_dtype, [f"{VARIABLE} = T.int32()"])
    # The interior's sizes in `max(width, long_from)`, which is the width wherever that
    # nest runs (as in source_width.width_source: the schedule cannot see the `if`).
    clamped = f"T.max({VARIABLE}, {sizes.long_from})"
    edges = sizes.all_rows.offset - sizes.qb.offset + sizes.qa
    allocations, body = _interior(layout, "", sizes.qa, sizes.qb.text(clamped))
    if edges:
        edge_allocations, edge_body = _edges(layout, "", sizes.qa, sizes.qb.text(VARIABLE),
                                             edges, O, VARIABLE)
        allocations, body = allocations + edge_allocations, body + edge_body
    if not sizes.short:
        return "\n".join(lines + allocations + ["    " + line for line in body]) + "\n"
    short_allocations, short_body = _edges(layout, "_short", None, None,
                                           sizes.all_rows.text(VARIABLE), O, VARIABLE)
    lines += tir.two_nests(f"{VARIABLE} >= {sizes.long_from}", (allocations, body),
                           (short_allocations, short_body))
    return "\n".join(lines) + "\n"


def _offset_text(layout: PhaseWidthLayout) -> str:
    """`PhaseWidthLayout.offset` of the phase variable `vp`, in TVMScript: e(p) =
    (p + pad_begin) // s - (J - 1), a floor division of the variable."""
    return f"(vp + {layout.geometry.pad_begin}) // {layout.stride} - {layout.taps - 1}"


def _interior(layout: PhaseWidthLayout, suffix: str, qa: int, qb: str
              ) -> tuple[list[str], list[str]]:
    """(allocations, loops) of the interior's nest: accumulate and store, tiles of VL
    rows of [qa, qb), no guard but the padded channels'."""
    geo = layout.geometry
    acc, dtype = geo.accumulate_dtype, geo.dtype
    N, CI, CO, s, J = geo.batch, geo.in_channels, geo.out_channels, layout.stride, layout.taps
    R, VL, B = layout.rows, layout.tile, layout.out_blocks
    a = f"acc{suffix}"
    tiles = f"(({qb} - {qa} + {VL - 1}) // {VL})"
    start = f"T.min({qa} + vt * {VL}, {qb} - {VL})"
    offset = _offset_text(layout)
    allocations = [f"    {a} = T.sblock_alloc_buffer(({N}, {tiles}, {B}, {R}, {s}, {VL}), "
                   f"\"{acc}\")"]
    store = (f"out[vn, vb * {R} + vr, ({start} + vu) * {s} + vp] = "
             f"T.Cast(\"{dtype}\", {a}[vn, vt, vb, vr, vp, vu])")
    lines = [
        f"for n, t, b, r, p, u, ci, j in T.grid({N}, {tiles}, {B}, {R}, {s}, {VL}, {CI}, {J}):",
        f"    with T.sblock(\"accumulate{suffix}\"):",
        "        vn, vt, vb, vr, vp, vu, vci, vj = T.axis.remap(\"SSSSSSRR\", "
        "[n, t, b, r, p, u, ci, j])",
        "        with T.init():",
        f"            {a}[vn, vt, vb, vr, vp, vu] = T.Cast(\"{acc}\", 0)",
        f"        {a}[vn, vt, vb, vr, vp, vu] = {a}[vn, vt, vb, vr, vp, vu] + " +
        f"T.Cast(\"{acc}\", x[vn, vci, {start} + vu + {offset} + vj]) "
        f"* filters[vb, vci, vj, vp, vr]",
        f"for n, t, b, r, p, u in T.grid({N}, {tiles}, {B}, {R}, {s}, {VL}):",
        f"    with T.sblock(\"store{suffix}\"):",
        "        vn, vt, vb, vr, vp, vu = T.axis.remap(\"SSSSSS\", [n, t, b, r, p, u])",
    ]
    if CO % R:
        lines += [f"        if vb * {R} + vr < {CO}:", f"            {store}"]
    else:
        lines.append(f"        {store}")
    return allocations, lines


def _edges(layout: PhaseWidthLayout, suffix: str, qa, qb, rows, O, W
           ) -> tuple[list[str], list[str]]:
    """(allocations, loops) of the edge rows' nest: row e is e itself below qa and
    qb + (e - qa) from there (every row from 0 when qa is None); each output summed with
    its reads guarded against [0, W) and stored where it lands inside [0, O)."""
    geo = layout.geometry
    acc, dtype = geo.accumulate_dtype, geo.dtype
    N, CI, CO, s, J, R = (geo.batch, geo.in_channels, geo.out_channels, layout.stride,
                          layout.taps, layout.rows)
    a = f"edge_acc{suffix}"
    q = "ve" if qa is None else f"T.Select(ve < {qa}, ve, {qb} + ve - {qa})"
    read = f"{q} + {_offset_text(layout)} + vj"
    allocations = [f"    {a} = T.sblock_alloc_buffer(({N}, {rows}, {CO}, {s}), \"{acc}\")"]
    lines = [
        f"for n, e, co, p, ci, j in T.grid({N}, {rows}, {CO}, {s}, {CI}, {J}):",
        f"    with T.sblock(\"edge{suffix}\"):",
        "        vn, ve, vco, vp, vci, vj = T.axis.remap(\"SSSSRR\", [n, e, co, p, ci, j])",
        "        with T.init():",
        f"            {a}[vn, ve, vco, vp] = T.Cast(\"{acc}\", 0)",
        f"        {a}[vn, ve, vco, vp] = {a}[vn, ve, vco, vp] + T.if_then_else("
        f"{read} >= 0 and {read} < {W}, T.Cast(\"{acc}\", x[vn, vci, {read}]) * "
        f"filters[vco // {R}, vci, vj, vp, vco % {R}], T.Cast(\"{acc}\", 0))",
        f"for n, e, co, p in T.grid({N}, {rows}, {CO}, {s}):",
        f"    with T.sblock(\"edge_store{suffix}\"):",
        "        vn, ve, vco, vp = T.axis.remap(\"SSSS\", [n, e, co, p])",
        f"        if {q} * {s} + vp < {O}:",
        f"            out[vn, vco, {q} * {s} + vp] = T.Cast(\"{dtype}\", {a}[vn, ve, vco, vp])",
    ]
    return allocations, lines
