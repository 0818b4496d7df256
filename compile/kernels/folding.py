"""Phases folded into channels: a few-output-channel layer as a stride-1 layer.

Where the dilation is 1 and the kernel width a multiple of the stride (K = a*s), tap
`k = a*s + r` of input row w lands on `u = (w + a)*s + r`: output phase r of row
`q = w + a` is output channel r of a stride-1 transposed convolution with K/s taps and
s*Cout output channels, whose filters are TF's `[K, Cout, Cin]` read as
`[K/s, s*Cout, Cin]` (a reshape). Its NWC output `[N, Q, s*Cout]` is the same memory
as `[N, Q*s, Cout]`: the layer's output, `pad_begin mod s` positions into it.

Why: the polyphase kernel vectorizes over output channels, so one output channel
(an ISTFT exported as ConvTranspose: htdemucs' n_fft 4096, hop 1024, 2049 -> 1) pads
to a whole vector of them and does 16x the work (448-500 ms against onnxruntime's
32-38 ms, issue 27); folded, the same layer is a plain GEMM with 1024 output channels.
Every phase has exactly K/s taps, so no padded tap multiplies an input Inf by zero.

The lowering (compile/lowering.py) runs the folded kernel and crops (and for NCW
transposes) around it; tuning times and records the folded kernel's geometry.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .polyphase import Geometry

# Fold layers with fewer output channels than this: one AVX-512 vector of float32, the
# widest channel tile a CPU schedule pads to (wider layers waste at most a partial vector
# and keep their records).
FOLD_BELOW_CHANNELS = 16


@dataclasses.dataclass(frozen=True)
class PhaseFold:
    """The layer (`layer`), the stride-1 kernel that computes it (`kernel`, always NWC),
    and where the layer's output starts in the kernel's output read as
    `[N, kernel.out_width * stride, out_channels]` (`offset`)."""

    layer: Geometry
    kernel: Geometry
    offset: int

    @property
    def stride(self) -> int:
        return self.layer.stride

    @property
    def full_width(self) -> int:
        """Output positions of the kernel's output read as the layer's: >= offset + O."""
        return self.kernel.out_width * self.stride

    def filters(self, filters: np.ndarray) -> np.ndarray:
        """TF-layout `[K, Cout, Cin]` filters of the layer -> the kernel's `[K/s, s*Cout, Cin]`."""
        K, cout, cin = filters.shape
        return np.ascontiguousarray(filters).reshape(K // self.stride, self.stride * cout, cin)

    def input(self, x: np.ndarray) -> np.ndarray:
        """The layer's input in the kernel's layout (NWC)."""
        return np.ascontiguousarray(x.transpose(0, 2, 1)) if self.layer.data_format == "NCW" \
            else x

    def output(self, y: np.ndarray) -> np.ndarray:
        """The kernel's output `[N, Q', s*Cout]` -> the layer's output, in its layout."""
        layer = self.layer
        y = y.reshape(y.shape[0], self.full_width, layer.out_channels)
        y = y[:, self.offset:self.offset + layer.out_width]
        return np.ascontiguousarray(y.transpose(0, 2, 1)) if layer.data_format == "NCW" else y


def fold_phases(geometry: Geometry) -> PhaseFold | None:
    """The folded form of a layer (see the module docstring), or None where it does not
    apply: dilation > 1, stride 1, K not a multiple of s, or FOLD_BELOW_CHANNELS output
    channels or more.

    Args:
      geometry: the layer, with the explicit `pad_begin` and `out_width` of any ONNX
        ConvTranspose (group 1).
    Returns:
      A PhaseFold whose kernel has stride 1, K/s taps, s*Cout output channels,
      pad_begin // s and enough output rows to cover the layer's `[pad_begin, pad_begin + O)`.
    """
    s, K = geometry.stride, geometry.kernel_width
    if geometry.dilation != 1 or s == 1 or K == 0 or K % s \
            or geometry.out_channels >= FOLD_BELOW_CHANNELS:
        return None
    offset = geometry.pad_begin % s
    rows = -(-(offset + geometry.out_width) // s)
    kernel = dataclasses.replace(
        geometry, out_width=rows, out_channels=s * geometry.out_channels, kernel_width=K // s,
        stride=1, pad_begin=geometry.pad_begin // s, data_format="NWC")
    return PhaseFold(geometry, kernel, offset)


def kernel_geometry(geometry: Geometry) -> Geometry:
    """The geometry of the kernel that computes a layer: its folded form's, or its own.
    Tuning records are keyed by it."""
    fold = fold_phases(geometry)
    return fold.kernel if fold is not None else geometry
