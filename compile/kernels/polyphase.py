"""The polyphase (sub-pixel) form of conv1d_transpose, as an unscheduled TIR PrimFunc.

A stride-s transposed convolution is s interleaved ordinary correlations. Write the
output position as `u = o + pad_begin = q*s + r` (phase r in [0, s)). Tap k of an input
row w lands at `u = w*s + k*d`, so with `g = gcd(d, s)`, `m = s/g`, `e = d/g`:

- phase r receives taps only when `g | r`; its taps are `k = k0(r) + j*m` (j = 0, 1, ...)
  where `k0(r)` is the smallest tap with `k0*d = r (mod s)`;
- tap j of phase r reads input row `w = q - c(r) - j*e` with `c(r) = (k0*d - r) / s`.

Every index below is affine in the loop variables (MetaSchedule miscompiled a
floor-division form of this kernel: max error 7.28, NaN with one thread, reported fast). Phases never get padded taps: a padded
tap would multiply a real input by a zero weight and turn an input Inf into a NaN where
TensorFlow has none. Input rows outside [0, W) come from a zero-padded copy of the input
(`pad`), which is also where the NCW transpose and the float16 -> float32 widening happen;
the schedule places that copy per tile.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ...graph.shapes import layout_shape
from ...graph.spec import Conv1DTransposeSpec
from . import tir

ACCUMULATE = {"float16": "float32", "float32": "float32", "float64": "float64"}


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The integers that determine the kernel: any ONNX ConvTranspose with group 1.

    Unlike `Conv1DTransposeSpec` it does not require TF's SAME/VALID padding: the Relax
    rewrite reads explicit pads, which any exporter may choose.
    """

    batch: int | None  # None: symbolic (any batch size at run time)
    in_width: int
    in_channels: int
    out_width: int
    out_channels: int
    kernel_width: int
    stride: int
    dilation: int
    pad_begin: int
    data_format: str  # layout of both input and output: "NWC" or "NCW"
    dtype: str
    # A folded layer (folding.py): > 1 when this stride-1 kernel's output channels are
    # the (phase, channel) pairs of a layer with this stride, whose output it writes:
    # `folded_width` positions wide, starting `folded_offset` positions into its rows.
    folded_stride: int = 1
    folded_offset: int = 0
    folded_width: int = 0

    @classmethod
    def from_spec(cls, spec: Conv1DTransposeSpec) -> "Geometry":
        return cls(spec.batch, spec.in_width, spec.in_channels, spec.out_width,
                   spec.out_channels, spec.kernel_width, spec.stride, spec.dilation,
                   spec.pad_begin, spec.data_format, spec.dtype)

    @property
    def accumulate_dtype(self) -> str:
        return ACCUMULATE[self.dtype]

    @property
    def accumulate_bytes(self) -> int:
        """Bytes of one accumulator (and packed filter) value."""
        return 8 if self.accumulate_dtype == "float64" else 4

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return layout_shape(self.data_format, self.batch, self.in_width, self.in_channels)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """The output buffer's shape: the layer's, for a folded kernel."""
        if self.folded_stride > 1:
            return layout_shape(self.data_format, self.batch, self.folded_width,
                                self.out_channels // self.folded_stride)
        return layout_shape(self.data_format, self.batch, self.out_width, self.out_channels)

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.in_width * self.in_channels * self.out_channels * self.kernel_width


@dataclasses.dataclass(frozen=True)
class Phase:
    """Output phase r (of `u = o + pad_begin`): taps `first_tap + j*tap_step`, j < taps,
    read input rows `q - shift - j*row_step`."""

    r: int
    first_tap: int
    taps: int
    shift: int


@dataclasses.dataclass(frozen=True)
class Decomposition:
    stride: int
    tap_step: int  # m = s / gcd(d, s)
    row_step: int  # e = d / gcd(d, s)
    phases: tuple[Phase, ...]  # all s phases; inactive ones have taps == 0
    q_first: int  # q of output position 0: floor(pad_begin / s)
    rows: int  # Q: number of q covering [0, O)
    offset: int  # rho = pad_begin mod s: o = qq*s + r - rho for qq = q - q_first

    @property
    def active(self) -> tuple[Phase, ...]:
        return tuple(p for p in self.phases if p.taps > 0)

    @property
    def max_taps(self) -> int:
        return max((p.taps for p in self.phases), default=0)

    def uniform_shift_step(self) -> int | None:
        """beta when every phase is active with one tap count and shift(r) = shift(0) + beta*r
        (then one block covers all phases); None otherwise."""
        phases = self.phases
        if any(p.taps != phases[0].taps or p.taps == 0 for p in phases):
            return None
        beta = phases[1].shift - phases[0].shift if len(phases) > 1 else 0
        if any(p.shift != phases[0].shift + beta * p.r for p in phases):
            return None
        return beta


def decompose(geometry: Geometry) -> Decomposition:
    """Split the taps of a stride-s transposed conv into its s output phases."""
    s, d, K = geometry.stride, geometry.dilation, geometry.kernel_width
    g = math.gcd(d, s)
    m, e = s // g, d // g
    phases = []
    for r in range(s):
        first = next((k for k in range(m) if (k * d) % s == r), None)
        if first is None or first >= K:
            phases.append(Phase(r, 0, 0, 0))
            continue
        taps = -(-(K - first) // m)
        phases.append(Phase(r, first, taps, (first * d - r) // s))
    pb, O = geometry.pad_begin, geometry.out_width
    q_first = pb // s
    rows = (pb + O - 1) // s - q_first + 1 if O > 0 else 0
    return Decomposition(s, m, e, tuple(phases), q_first, rows, pb % s)


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Padding of the iteration space to whole tiles, chosen by the schedule.

    rows: q rows per register tile; out_tile: output channels per vector tile (the packed
    filter's innermost axis); in_tile: input channels per reduction step. The extra rows
    and channels are computed on zeros and never stored.
    """

    rows: int = 1
    out_tile: int = 1
    in_tile: int = 1


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Sizes of the generated kernel and the names of its blocks, for the schedules."""

    geometry: Geometry
    decomposition: Decomposition
    tiling: Tiling
    padded_rows: int  # rows rounded up to tiling.rows
    in_channels: int  # rounded up to tiling.in_tile
    out_blocks: int  # ceil(out_channels / out_tile)
    input_first_row: int  # input row of padded row 0 (<= 0 when padding is needed)
    padded_width: int
    groups: tuple[tuple[str, str, tuple[int, ...]], ...]  # (accumulate, store, phases)
    zero_blocks: tuple[str, ...]
    # Packed filters: [out_blocks, max_taps, in_channels, s, out_tile], or with
    # phase_major [out_blocks, s, max_taps, in_channels, out_tile].
    filters_shape: tuple[int, ...]
    merged: bool  # one block computes all phases (phase index r is a block variable)
    # The Winograd F(2,r) form (winograd.py): rows in pairs, filters
    # [.., winograd.filter_slots(r), in, s, out_tile].
    winograd: bool = False
    # Each (channel block, phase) panel of filters contiguous, for a register tile of one
    # phase. Interleaved by phase, such a panel reads 256 bytes of every 1 KB (s = 4,
    # 64 channels), so it only reaches a quarter of the cache's sets: L2 holds a quarter
    # of it. Kernel ms, interleaved -> by phase, in one process (Emerald Rapids,
    # 2026-11-26, tools/cpu/kernel_plans.py): hifigan-up2 6.08 -> 4.82, ncw-up2 6.97 ->
    # 5.43, demucs-dec1 8.11 -> 7.50 (its F(2,2) form, 1.5 MB panels: 22.5 -> 9.4 in
    # separate runs). A tile spanning every phase reads all s phases of one channel at
    # once: interleaved suits it.
    phase_major: bool = False
    # F(2,2) with only the direct taps G1 and G0 packed: the middle product's filters,
    # G0 + G1, are summed by the kernel, a reduction block at a time (winograd.py), so a
    # plan that streams its filters from beyond L2 reads 2/3 of the bytes. Set for
    # blocked plans only (schedule_cpu.build, winograd.blocks_reduction).
    summed_filters: bool = False

    def filter_at(self, block: str, phase: str, slot: str, channel: str, lane: str) -> str:
        """TVMScript index of one packed filter value."""
        if self.phase_major:
            return f"filters[{block}, {phase}, {slot}, {channel}, {lane}]"
        return f"filters[{block}, {slot}, {channel}, {phase}, {lane}]"

    @property
    def pad_block(self) -> str:
        return "pad"


def plan_layout(geometry: Geometry, tiling: Tiling, winograd: bool = False,
                phase_major: bool = False, summed_filters: bool = False) -> KernelLayout:
    """The kernel's sizes for a tiling: padded rows/channels, the padded input window, and
    its blocks: one accumulate/store pair for all phases when they share tap count and an
    affine input shift (d = 1 with K a multiple of s, or s = 1), else one pair per active
    phase, plus a zero-filling block per phase that no tap reaches.

    winograd: the F(2,r) form (winograd.py), where `tiling.rows` counts pairs of rows.
    phase_major: the filters' panel of each phase contiguous (KernelLayout.phase_major).
    summed_filters: F(2,2)'s middle product's filters summed by the kernel
    (KernelLayout); no effect on any other form.
    """
    dec = decompose(geometry)
    s, e = dec.stride, dec.row_step
    if winograd:
        from .winograd import padded_rows as _winograd_rows
        padded_rows = _winograd_rows(dec, tiling.rows)
    else:
        padded_rows = round_up(dec.rows, tiling.rows)
    cin = round_up(geometry.in_channels, tiling.in_tile)
    out_blocks = -(-geometry.out_channels // tiling.out_tile)
    active = dec.active
    if active:
        first = dec.q_first - max(p.shift + (p.taps - 1) * e for p in active)
        last = padded_rows - 1 + dec.q_first - min(p.shift for p in active)
    else:
        first, last = 0, -1
    beta = dec.uniform_shift_step()
    if beta is not None:
        groups = (("accumulate", "store", tuple(range(s))),)
    else:
        groups = tuple((f"accumulate_r{p.r}", f"store_r{p.r}", (p.r,)) for p in active)
    zero = tuple(f"zero_r{p.r}" for p in dec.phases if p.taps == 0)
    if winograd:
        from .winograd import filter_slots
        summed_filters = summed_filters and dec.max_taps == 2
        taps = filter_slots(dec.max_taps, summed_filters)
    else:
        summed_filters = False
        taps = dec.max_taps
    return KernelLayout(geometry, dec, tiling, padded_rows, cin, out_blocks, first,
                        last - first + 1, groups, zero,
                        (out_blocks, s, taps, cin, tiling.out_tile) if phase_major
                        else (out_blocks, taps, cin, s, tiling.out_tile),
                        beta is not None, winograd, phase_major, summed_filters)


def pack_filters(filters: np.ndarray, layout: KernelLayout) -> np.ndarray:
    """TF-layout `[K, out, in]` filters -> `[out_blocks, taps, in, phase, out_tile]`
    (`[out_blocks, phase, taps, in, out_tile]` with layout.phase_major).

    Done once at compile time (filters are constants of the model). Slots of missing
    taps and of padding channels are zero and, for taps, never read.
    """
    geometry, dec = layout.geometry, layout.decomposition
    f = np.asarray(filters)
    K, cout, cin = f.shape
    packed = np.zeros((layout.out_blocks * layout.tiling.out_tile, dec.max_taps,
                       layout.in_channels, dec.stride), dtype=geometry.accumulate_dtype)
    for p in dec.active:
        for j in range(p.taps):
            k = p.first_tap + j * dec.tap_step
            packed[:cout, j, :cin, p.r] = f[k].astype(geometry.accumulate_dtype)
    packed = packed.reshape(layout.out_blocks, layout.tiling.out_tile, dec.max_taps,
                            layout.in_channels, dec.stride)
    packed = np.ascontiguousarray(packed.transpose(0, 2, 3, 4, 1))
    if layout.winograd:
        from .winograd import transform_filters
        packed = transform_filters(packed, layout.summed_filters)
    if layout.phase_major:
        packed = np.ascontiguousarray(packed.transpose(0, 3, 1, 2, 4))
    return packed


def kernel_source(layout: KernelLayout, name: str = "conv1d_transpose_polyphase") -> str:
    """TVMScript of the unscheduled kernel: pad, then per phase group accumulate + store."""
    g, dec, t = layout.geometry, layout.decomposition, layout.tiling
    acc, dtype = g.accumulate_dtype, g.dtype
    N, W, O, Cout = g.batch, g.in_width, g.out_width, g.out_channels
    S, e, rho = dec.stride, dec.row_step, dec.offset
    CI, QP, COO, COT, P = layout.in_channels, layout.padded_rows, layout.out_blocks, \
        t.out_tile, layout.padded_width
    w0 = layout.input_first_row
    x_shape, o_shape = g.input_shape, g.output_shape
    nwc = g.data_format == "NWC"

    def out_at(n, o, co):
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
        terms += [f"{at} < {g.folded_width}", f"{channel} < {Cout}"]
        return (f"if {' and '.join(terms)}:",
                f"    {out_at('vn', at, layer_channel)} = {value}")

    x_read = f"x[vn, vp + {w0}, vci]" if nwc else f"x[vn, vci, vp + {w0}]"
    if N is None:
        # Symbolic batch (an ONNX dim_param, or a batch of 0, which TVM's importer
        # makes symbolic): one kernel serves every batch size.
        N = "batch"
        x_shape = tuple(N if i == 0 else d for i, d in enumerate(x_shape))
        o_shape = tuple(N if i == 0 else d for i, d in enumerate(o_shape))
        lines = [
            "@T.prim_func(private=True, s_tir=True)",
            f"def {name}(x_handle: T.handle, filters: T.Buffer({layout.filters_shape}, "
            f"\"{acc}\"), out_handle: T.handle):",
            "    T.func_attr({\"tirx.noalias\": True})",
            "    batch = T.int64()",
            f"    x = T.match_buffer(x_handle, ({', '.join(map(str, x_shape))}), \"{dtype}\")",
            f"    out = T.match_buffer(out_handle, ({', '.join(map(str, o_shape))}), \"{dtype}\")",
        ]
    else:
        lines = [
            "@T.prim_func(private=True, s_tir=True)",
            f"def {name}(x: T.Buffer({x_shape}, \"{dtype}\"), "
            f"filters: T.Buffer({layout.filters_shape}, \"{acc}\"), "
            f"out: T.Buffer({o_shape}, \"{dtype}\")):",
            "    T.func_attr({\"tirx.noalias\": True})",
        ]
    lines += [
        f"    xp = T.sblock_alloc_buffer(({N}, {P}, {CI}), \"{acc}\")",
    ]
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
            f"    for n, qq, co in T.grid({N}, {dec.rows}, {Cout}):",
            f"        with T.sblock(\"zero_r{p.r}\"):",
            "            vn, vq, vco = T.axis.remap(\"SSS\", [n, qq, co])",
            f"            if {tir.inside(f'vq * {S} + {p.r - rho}', p.r - rho, O)}:",
            f"                {out_at('vn', f'vq * {S} + {p.r - rho}', 'vco')} = T.Cast(\"{dtype}\", 0)",
        ]
    return "\n".join(lines) + "\n"


def build_primfunc(layout: KernelLayout, name: str = "conv1d_transpose_polyphase"):
    """The unscheduled kernel as a PrimFunc `(x, packed_filters) -> out`."""
    import tvm
    from tvm.script import tirx as T  # noqa: F401  (used by the parsed source)

    if layout.winograd:
        from .winograd import winograd_source
        return tvm.script.from_source(winograd_source(layout, name))
    return tvm.script.from_source(kernel_source(layout, name))
