"""The polyphase (sub-pixel) decomposition of conv1d_transpose: the integers that every
form of the kernel (source_direct.py, the Winograd form's source_winograd.py) and every
schedule is built from.

A stride-s transposed convolution is s interleaved ordinary correlations. Write the
output position as `u = o + pad_begin = q*s + r` (phase r in [0, s)). Tap k of an input
row w lands at `u = w*s + k*d`, so with `g = gcd(d, s)`, `m = s/g`, `e = d/g`:

- phase r receives taps only when `g | r`; its taps are `k = k0(r) + j*m` (j = 0, 1, ...)
  where `k0(r)` is the smallest tap with `k0*d = r (mod s)`;
- tap j of phase r reads input row `w = q - c(r) - j*e` with `c(r) = (k0*d - r) / s`.

Phases never get padded taps: a padded tap would multiply a real input by a zero weight
and turn an input Inf into a NaN where TensorFlow has none.
"""
from __future__ import annotations

import dataclasses
import math

from ...graph.shapes import layout_shape
from ...graph.spec import Conv1DTransposeSpec

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


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
