"""Phases folded into channels: a few-output-channel layer as a stride-1 kernel.

Where the dilation is 1 and the kernel width a multiple of the stride (K = a*s), tap
`k = a*s + r` of input row w lands on `u = (w + a)*s + r`: output phase r of row
`q = w + a` is an output channel of a stride-1 transposed convolution with K/s taps and
s*Cout output channels. The folded kernel (`fold_phases`) computes that, and its store
writes each (phase, channel) pair straight to the layer's output position
`q*s + r - pad_begin` (source_direct.kernel_source): same input, same output, no copies.

Why: the polyphase kernel vectorizes over output channels, so one output channel (an
ISTFT exported as ConvTranspose: htdemucs' n_fft 4096, hop 1024, 2049 -> 1) pads to a
whole vector of them and does 16x the work (448-500 ms against onnxruntime's 32-38 ms,
issue 27). Folded, the same layer is one GEMM with 1024 output channels. Every phase has
exactly K/s taps, so no padded tap multiplies an input Inf by zero.

The pairs are phase-major in NWC (channel `r*Cout + co`: a vector of them is one run of
the output) and channel-major in NCW (`co*s + r`: runs of s positions of one channel
row); with one output channel the two are the same.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .polyphase import Geometry

# Fold layers with fewer output channels than this: one AVX-512 vector of float32, the
# widest channel tile a CPU schedule pads to. Wider layers waste at most part of a vector
# and keep their tuning records.
FOLD_BELOW_CHANNELS = 16


def fold_phases(geometry: Geometry) -> Geometry | None:
    """The folded kernel's geometry for a layer (see the module docstring), or None where
    folding does not apply: dilation > 1, stride 1, K not a multiple of s, or
    FOLD_BELOW_CHANNELS output channels or more.

    Args:
      geometry: the layer, with the explicit `pad_begin` and `out_width` of any ONNX
        ConvTranspose (group 1).
    Returns:
      A stride-1 geometry with K/s taps and s*Cout output channels, pad_begin // s, and
      enough rows to cover the layer's `[pad_begin, pad_begin + O)`; its output buffer
      (`output_shape`) is the layer's.
    """
    s, K = geometry.stride, geometry.kernel_width
    if geometry.folded_stride != 1 or geometry.dilation != 1 or s == 1 or K == 0 or K % s \
            or geometry.out_channels >= FOLD_BELOW_CHANNELS:
        return None
    offset = geometry.pad_begin % s
    rows = -(-(offset + geometry.out_width) // s)
    return dataclasses.replace(
        geometry, out_width=rows, out_channels=s * geometry.out_channels,
        kernel_width=K // s, stride=1, pad_begin=geometry.pad_begin // s,
        folded_stride=s, folded_offset=offset, folded_width=geometry.out_width)


def kernel_geometry(geometry: Geometry) -> Geometry:
    """The geometry of the kernel that computes a layer: its folded form's, or its own.
    Tuning records are keyed by it."""
    return fold_phases(geometry) or geometry


def fold_filters(filters: np.ndarray, geometry: Geometry) -> np.ndarray:
    """TF-layout `[K, Cout, Cin]` filters of a layer -> those of the kernel that computes
    it (`kernel_geometry`): `[K/s, s*Cout, Cin]` in the folded kernel's channel order."""
    if geometry.folded_stride == 1:
        return filters
    s = geometry.folded_stride
    K, cout, cin = geometry.kernel_width * s, geometry.out_channels // s, geometry.in_channels
    taps = np.ascontiguousarray(filters).reshape(K // s, s, cout, cin)
    if geometry.data_format == "NCW":
        taps = taps.transpose(0, 2, 1, 3)  # channel-major
    return np.ascontiguousarray(taps).reshape(K // s, s * cout, cin)
