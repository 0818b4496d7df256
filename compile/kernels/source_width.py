"""The width form of a stride-1 NCW layer: vectorized along the width (NCW's contiguous
axis) instead of the output channels, as the TVMScript of an unscheduled PrimFunc.

A stride-1 transposed convolution is a correlation: with `L = (K-1)*d - pad_begin`,

    out[n, co, u] = sum_{ci, k} g[co, ci, k] * xp[n, ci, u + k*d],   xp[p] = x[p - L]

(zero outside [0, W)), where g[k] = f[K-1-k] are the ConvTranspose taps reversed
(polyphase.py: tap k of input row w lands at u = w - pad_begin + k*d).

The output is cut into tiles of `R` output channels by `VL` positions (`WidthLayout`);
a tile starts at `min(t * VL, span - VL)`, so the last tile of a row overlaps the one
before instead of running past its end: every position a tile computes is one of the
row's and every input it reads is inside the input (or its zero-padded copy), with no
guard in the inner loop. `span` is the output width, or VL where the row is shorter;
only then does the store need a width guard. Where every stored output reads inside
[0, W) (no zero padding: a 1x1 or 'valid' conv) the kernel reads `x` itself; otherwise
a zero-padded copy `xp`, written by three guard-free blocks (zeros, copy, zeros) that
vectorize. Output channels are padded to whole tiles with zero filters and never
stored, so every stored value is a sum over real taps of real inputs or zero padding.

With a symbolic width (symbolic_width.py: one kernel for every input width), whether a
row is shorter than a tile is known only at run time, so the kernel holds both nests:
from the width where the output is one tile wide on, the static one with its sizes
affine in the width and a guard-free store; below it, one tile with a guarded store.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import tir
from .polyphase import Geometry
from .symbolic_width import VARIABLE, Affine, SymbolicWidth, layer_at, smallest_width

LANES = 16  # float32 lanes of an AVX-512 vector


@dataclasses.dataclass(frozen=True)
class WidthLayout:
    """Sizes of a width-form kernel: tiles of `rows` output channels by `vectors`
    vectors of `lanes` positions."""

    geometry: Geometry
    rows: int  # R: output channels per register tile
    vectors: int  # V: vectors of positions per register tile
    lanes: int = LANES

    @property
    def tile(self) -> int:  # VL: positions per tile
        return self.vectors * self.lanes

    @property
    def left(self) -> int:  # L: input row w = p - L of padded position p
        g = self.geometry
        return (g.kernel_width - 1) * g.dilation - g.pad_begin

    @property
    def span(self) -> int:
        """Positions the tiles cover: the output width, or one tile where it is shorter."""
        return max(self.geometry.out_width, self.tile)

    @property
    def tiles(self) -> int:
        return -(-self.span // self.tile)

    @property
    def out_blocks(self) -> int:
        return -(-self.geometry.out_channels // self.rows)

    @property
    def reach(self) -> int:
        """Padded positions a tile's last output reads past its own: (K-1)*d."""
        return (self.geometry.kernel_width - 1) * self.geometry.dilation

    @property
    def padded(self) -> bool:
        """Whether the kernel reads a zero-padded copy: some read falls outside [0, W)."""
        g = self.geometry
        return self.left > 0 or self.span + self.reach - self.left > g.in_width

    @property
    def padded_width(self) -> int:
        return self.span + self.reach

    @property
    def filters_shape(self) -> tuple[int, int, int, int]:
        g = self.geometry
        return (self.out_blocks, g.in_channels, g.kernel_width, self.rows)


def pack_filters(filters: np.ndarray, layout: WidthLayout) -> np.ndarray:
    """TF-layout `[K, Cout, Cin]` ConvTranspose filters -> `[out_blocks, Cin, K, R]` in
    correlation order (taps reversed), zero for the padded output channels."""
    g = layout.geometry
    K, cout, cin = filters.shape
    taps = np.asarray(filters, dtype=g.accumulate_dtype)[::-1]  # g[k] = f[K-1-k]
    packed = np.zeros((layout.out_blocks * layout.rows, cin, K), g.accumulate_dtype)
    packed[:cout] = taps.transpose(1, 2, 0)
    packed = packed.reshape(layout.out_blocks, layout.rows, cin, K).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(packed)


def pad_bounds(layout: WidthLayout) -> tuple[int, int]:
    """[lo, hi): the padded positions that the copy of the input writes (zeros before
    and after)."""
    lo = max(0, layout.left)
    return lo, max(lo, min(layout.padded_width, layout.geometry.in_width + layout.left))


@dataclasses.dataclass(frozen=True)
class SymbolicSizes:
    """The width-dependent sizes of the width form for every input width W of a layer
    (symbolic_width.py; stride 1: its output is W + c wide).

    From `long_from` on (an output of at least one tile VL) the static layout's sizes
    are affine in W: span = O, the padded width O + (K-1)*d, the copy's bounds; whether
    the kernel reads a zero-padded copy does not change. Narrower inputs (`short`) take
    a kernel of one tile, span VL, whose store is guarded."""

    long_from: int  # the narrowest input of the long kernel
    short: bool  # some narrower input has a non-empty output
    span: Affine
    padded_width: Affine
    lo: Affine
    hi: Affine
    padded: bool

    def copies(self) -> bool:
        """Whether the long kernel's copy of the input is a block (any positions)."""
        return self.padded and (self.hi.scale, self.hi.offset) != (self.lo.scale, self.lo.offset)


def symbolic_sizes(layout: WidthLayout, width: SymbolicWidth) -> SymbolicSizes | None:
    """The sizes of `layout` (laid out at a reference width) at every input width, or None
    where the layer is not stride 1 or a size is not affine from `long_from` on.

    The static sizes are maxima and minima of affine functions of W whose constants are
    bounded by VL, (K-1)*d, |L| and |c|: checked at every width from `long_from` past
    all of those and at a few far ones, the affine forms hold at every width."""
    geo = layout.geometry
    if geo.stride != 1 or geo.folded_stride != 1 or width.out_width.scale != 1:
        return None
    c = width.out_width.offset
    at = layer_at(geo, c)
    lowest = smallest_width(width)
    first = max(lowest, layout.tile - c)

    def sizes(w):
        static = dataclasses.replace(layout, geometry=at(w))
        return (static.span, static.padded_width, *pad_bounds(static)), static.padded

    reach = 2 * (layout.tile + layout.reach + abs(layout.left) + abs(c)) + 2
    widths = [*range(first, first + reach), *(first + 10 ** e for e in range(3, 8))]
    (base, padded), (step, _) = sizes(first), sizes(first + 1)
    forms = [Affine(b - a, a - (b - a) * first) for a, b in zip(base, step)]
    for w in widths:
        values, padded_at = sizes(w)
        if padded_at != padded or any(f.at(w) != v for f, v in zip(forms, values)):
            return None
    return SymbolicSizes(first, first > lowest, *forms, padded)


def width_source(layout: WidthLayout, name: str = "conv1d_transpose_width",
                 width: SymbolicWidth | None = None) -> str:
    """TVMScript of the unscheduled kernel: (pad), accumulate per tile, store.

    width: the kernel for every input width (symbolic_width.py): `layout` is laid out at
    a reference width, x and out take their width from the PrimFunc's variable `width`,
    and the kernel is two loop nests: `if O >= VL` the static form's nest with every
    width-dependent size an expression of `width` (the tiles, `ceil(O / VL)`, are one
    loop that no schedule splits, so no guard), else one tile of VL positions from a
    guarded zero-padded copy, with a guarded store, its blocks named `..._short`. The
    static form at those widths decides the same way (`WidthLayout.span`): the long
    nest's store is guard-free, and a guard inside the vectorized store scalarizes it."""
    geo = layout.geometry
    acc, dtype = geo.accumulate_dtype, geo.dtype
    N, CI, CO, VL = geo.batch, geo.in_channels, geo.out_channels, layout.tile
    if width is None:
        lines = tir.signature(name, geo.input_shape, layout.filters_shape, geo.output_shape,
                              dtype, acc)
        allocations, body = _nest(layout, "", layout.tiles, _constant(layout.span),
                                  layout.padded, _constant(layout.padded_width),
                                  tuple(map(_constant, pad_bounds(layout))),
                                  layout.span > geo.out_width, geo.out_width)
        return "\n".join(lines + allocations + ["    " + line for line in body]) + "\n"
    sizes = symbolic_sizes(layout, width)
    if sizes is None:
        raise ValueError(f"no symbolic-width form of the width kernel for {geo}")
    O = width.out_width.text()
    lines = tir.signature(name, (N, CI, VARIABLE), layout.filters_shape, (N, CO, O), dtype,
                          acc, [f"{VARIABLE} = T.int32()"])
    # The long nest's sizes are written in `max(width, long_from)`, which is the width
    # wherever that nest runs: TVM's schedule then proves that the tiles read only what
    # the pad blocks write (compute_at refuses a scope where it cannot, and it knows
    # nothing of the `if` around the nest, nor that `width` is positive).
    clamped = f"T.max({VARIABLE}, {sizes.long_from})"
    span = sizes.span
    tiles = f"({_shifted(span, VL - 1).text(clamped)} // {VL})"
    allocations, body = _nest(layout, "", tiles, span, sizes.padded, sizes.padded_width,
                              (sizes.lo, sizes.hi), False, O, clamped)
    if not sizes.short:
        return "\n".join(lines + allocations + ["    " + line for line in body]) + "\n"
    # One tile from a copy of the input with a guard (scalar: at most VL + (K-1)*d
    # positions per channel), for outputs narrower than VL.
    short_allocations, short_body = _nest(layout, "_short", 1, _constant(VL), True,
                                          _constant(VL + layout.reach), None, True, O)
    lines += tir.two_nests(f"{VARIABLE} >= {sizes.long_from}", (allocations, body),
                           (short_allocations, short_body))
    return "\n".join(lines) + "\n"


def _constant(value: int) -> Affine:
    return Affine(0, value)


def _shifted(value: Affine, offset: int) -> Affine:
    return Affine(value.scale, value.offset + offset)


def _extent(begin: Affine, end: Affine) -> Affine:
    return Affine(end.scale - begin.scale, end.offset - begin.offset)


def _nest(layout: WidthLayout, suffix: str, tiles, span: Affine, padded: bool,
          P: Affine, bounds, guarded: bool, O, variable: str = VARIABLE
          ) -> tuple[list[str], list[str]]:
    """(allocations, loops) of one loop nest of the kernel, its blocks and buffers named
    with `suffix`: (pad,) accumulate, store. tiles: the tile loop's extent; span: the
    positions the tiles cover; P: the padded width; bounds: the copy's (lo, hi), or None
    for one guarded copy of the whole padded width; guarded: the store checks the
    position against O; variable: the text the sizes are affine in. The loops come
    unindented."""
    geo = layout.geometry
    acc, dtype = geo.accumulate_dtype, geo.dtype
    N, CI, CO, K, d = (geo.batch, geo.in_channels, geo.out_channels, geo.kernel_width,
                       geo.dilation)
    R, VL, B, L = layout.rows, layout.tile, layout.out_blocks, layout.left
    xp, a = f"xp{suffix}", f"acc{suffix}"
    start = f"T.min(vt * {VL}, {_shifted(span, -VL).text(variable)})"
    # (In the root block, where TVMScript allocates: TVM moves each allocation down to
    # where it is used.)
    allocations = [f"    {a} = T.sblock_alloc_buffer(({N}, {tiles}, {B}, {R}, {VL}), \"{acc}\")"]
    lines = []
    if padded:
        allocations.append(f"    {xp} = T.sblock_alloc_buffer(({N}, {CI}, {P.text(variable)}), \"{acc}\")")
    if padded and bounds is None:
        lines += [
            f"for n, ci, p in T.grid({N}, {CI}, {P.text(variable)}):",
            f"    with T.sblock(\"pad{suffix}\"):",
            "        vn, vci, vp = T.axis.remap(\"SSS\", [n, ci, p])",
            f"        {xp}[vn, vci, vp] = T.if_then_else(vp >= {L} and vp < {VARIABLE} + {L}, "
            f"T.Cast(\"{acc}\", x[vn, vci, vp - {L}]), T.Cast(\"{acc}\", 0))",
        ]
    elif padded:
        # Zeros, the input, zeros: three blocks without a guard (a guarded copy would be
        # scalarized by the vectorizer).
        lo, hi = bounds
        for block, begin, end, value in (
                ("pad_left", _constant(0), lo, f"T.Cast(\"{acc}\", 0)"),
                ("pad_copy", lo, hi, f"T.Cast(\"{acc}\", x[vn, vci, vp + "
                 f"{_shifted(lo, -L).text(variable)}])"),
                ("pad_right", hi, P, f"T.Cast(\"{acc}\", 0)")):
            extent = _extent(begin, end)
            if extent.scale or extent.offset > 0:
                lines += [
                    f"for n, ci, p in T.grid({N}, {CI}, {extent.text(variable)}):",
                    f"    with T.sblock(\"{block}{suffix}\"):",
                    "        vn, vci, vp = T.axis.remap(\"SSS\", [n, ci, p])",
                    f"        {xp}[vn, vci, vp + {begin.text(variable)}] = {value}",
                ]
    if padded:
        read = f"{xp}[vn, vci, {start} + vu + vk * {d}]"
    else:
        read = f"T.Cast(\"{acc}\", x[vn, vci, {start} + vu + vk * {d} + {-L}])"
    stored = [f"{start} + vu < {O}"] if guarded else []
    if CO % R:
        stored.append(f"vb * {R} + vr < {CO}")
    store = f"out[vn, vb * {R} + vr, {start} + vu] = T.Cast(\"{dtype}\", {a}[vn, vt, vb, vr, vu])"
    lines += [
        f"for n, t, b, r, u, ci, k in T.grid({N}, {tiles}, {B}, {R}, {VL}, {CI}, {K}):",
        f"    with T.sblock(\"accumulate{suffix}\"):",
        "        vn, vt, vb, vr, vu, vci, vk = T.axis.remap(\"SSSSSRR\", "
        "[n, t, b, r, u, ci, k])",
        "        with T.init():",
        f"            {a}[vn, vt, vb, vr, vu] = T.Cast(\"{acc}\", 0)",
        f"        {a}[vn, vt, vb, vr, vu] = {a}[vn, vt, vb, vr, vu] + {read} "
        f"* filters[vb, vci, vk, vr]",
        f"for n, t, b, r, u in T.grid({N}, {tiles}, {B}, {R}, {VL}):",
        f"    with T.sblock(\"store{suffix}\"):",
        "        vn, vt, vb, vr, vu = T.axis.remap(\"SSSSS\", [n, t, b, r, u])",
    ]
    if stored:
        lines += [f"        if {' and '.join(stored)}:", f"            {store}"]
    else:
        lines.append(f"        {store}")
    return allocations, lines
