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
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .polyphase import Geometry

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


def width_source(layout: WidthLayout, name: str = "conv1d_transpose_width") -> str:
    """TVMScript of the unscheduled kernel: (pad), accumulate per tile, store."""
    g = layout
    geo = layout.geometry
    acc, dtype = geo.accumulate_dtype, geo.dtype
    N, CI, CO, W, O, K, d = (geo.batch, geo.in_channels, geo.out_channels, geo.in_width,
                             geo.out_width, geo.kernel_width, geo.dilation)
    R, VL, T_, B, L, P = g.rows, g.tile, g.tiles, g.out_blocks, g.left, g.padded_width
    start = f"T.min(vt * {VL}, {g.span - VL})"
    lines = [
        "@T.prim_func(private=True, s_tir=True)",
        f"def {name}(x: T.Buffer({geo.input_shape}, \"{dtype}\"), "
        f"filters: T.Buffer({g.filters_shape}, \"{acc}\"), "
        f"out: T.Buffer({geo.output_shape}, \"{dtype}\")):",
        "    T.func_attr({\"tirx.noalias\": True})",
        f"    acc = T.sblock_alloc_buffer(({N}, {T_}, {B}, {R}, {VL}), \"{acc}\")",
    ]
    if g.padded:
        # Zeros, the input, zeros: three blocks without a guard (a guarded copy would be
        # scalarized by the vectorizer).
        lo = max(0, L)
        hi = max(lo, min(P, W + L))
        lines.append(f"    xp = T.sblock_alloc_buffer(({N}, {CI}, {P}), \"{acc}\")")
        for block, begin, end, value in (("pad_left", 0, lo, f"T.Cast(\"{acc}\", 0)"),
                                         ("pad_copy", lo, hi, f"T.Cast(\"{acc}\", "
                                          f"x[vn, vci, vp + {lo - L}])"),
                                         ("pad_right", hi, P, f"T.Cast(\"{acc}\", 0)")):
            if end > begin:
                lines += [
                    f"    for n, ci, p in T.grid({N}, {CI}, {end - begin}):",
                    f"        with T.sblock(\"{block}\"):",
                    "            vn, vci, vp = T.axis.remap(\"SSS\", [n, ci, p])",
                    f"            xp[vn, vci, vp + {begin}] = {value}",
                ]
        read = f"xp[vn, vci, {start} + vu + vk * {d}]"
    else:
        read = f"T.Cast(\"{acc}\", x[vn, vci, {start} + vu + vk * {d} + {-L}])"
    stored = [f"{start} + vu < {O}"] if g.span > O else []
    if CO % R:
        stored.append(f"vb * {R} + vr < {CO}")
    store = f"out[vn, vb * {R} + vr, {start} + vu] = T.Cast(\"{dtype}\", acc[vn, vt, vb, vr, vu])"
    lines += [
        f"    for n, t, b, r, u, ci, k in T.grid({N}, {T_}, {B}, {R}, {VL}, {CI}, {K}):",
        "        with T.sblock(\"accumulate\"):",
        "            vn, vt, vb, vr, vu, vci, vk = T.axis.remap(\"SSSSSRR\", "
        "[n, t, b, r, u, ci, k])",
        "            with T.init():",
        f"                acc[vn, vt, vb, vr, vu] = T.Cast(\"{acc}\", 0)",
        f"            acc[vn, vt, vb, vr, vu] = acc[vn, vt, vb, vr, vu] + {read} "
        f"* filters[vb, vci, vk, vr]",
        f"    for n, t, b, r, u in T.grid({N}, {T_}, {B}, {R}, {VL}):",
        "        with T.sblock(\"store\"):",
        "            vn, vt, vb, vr, vu = T.axis.remap(\"SSSSS\", [n, t, b, r, u])",
    ]
    if stored:
        lines += [f"            if {' and '.join(stored)}:", f"                {store}"]
    else:
        lines.append(f"            {store}")
    return "\n".join(lines) + "\n"
