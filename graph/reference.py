"""The numpy reference: tf.nn.conv1d_transpose's definition (the transpose of conv1d),
written out directly.

Short and obviously right; used by tests, `verify` and the bench, never by the fast path.
"""
from __future__ import annotations

import numpy as np

from .spec import Conv1DTransposeSpec


def reference_conv1d_transpose(input: np.ndarray, filters: np.ndarray,
                               spec: Conv1DTransposeSpec,
                               accumulate=np.float64) -> np.ndarray:
    """Every input position w and tap k adds x[n,w,:] @ f[k,co,:] to o = w*s + k*d - pad_begin.

    Contributions outside [0, O) are dropped. Computed in `accumulate` (float64 by
    default) and returned in that precision, so callers compare a backend's result
    against the exact value rather than against another rounding.
    """
    x = np.asarray(input, dtype=accumulate)
    f = np.asarray(filters, dtype=accumulate)
    if spec.data_format == "NCW":
        x = x.transpose(0, 2, 1)
    out = np.zeros((spec.batch, spec.out_width, spec.out_channels), dtype=accumulate)
    w = np.arange(spec.in_width)
    for k in range(spec.kernel_width):
        o = w * spec.stride + k * spec.dilation - spec.pad_begin
        inside = (o >= 0) & (o < spec.out_width)
        # For a fixed tap, o is strictly increasing in w: no two inputs hit one output.
        out[:, o[inside], :] += x[:, w[inside], :] @ f[k].T
    if spec.data_format == "NCW":
        out = out.transpose(0, 2, 1)
    return out


def magnitude(input: np.ndarray, filters: np.ndarray, spec: Conv1DTransposeSpec) -> np.ndarray:
    """The same sum over |x| * |f|: the scale that rounding errors are relative to."""
    return reference_conv1d_transpose(np.abs(np.asarray(input, np.float64)),
                                      np.abs(np.asarray(filters, np.float64)), spec)


# Relative to `magnitude`: a result is right when |y - exact| <= RTOL * magnitude + ATOL.
# float16 results are rounded once to 11 bits (and onnxruntime's CPU kernel accumulates
# in float16); float32 accumulation over up to a few thousand terms stays near 1e-6.
TOLERANCES = {
    "float16": (1e-2, 1e-3),
    "float32": (2e-5, 1e-6),
    "float64": (1e-12, 1e-13),
}


def max_error(actual: np.ndarray, input: np.ndarray, filters: np.ndarray,
              spec: Conv1DTransposeSpec) -> tuple[float, bool]:
    """(max abs error against the reference, whether it is within the dtype's tolerance).

    NaN and Inf must appear exactly where the reference has them.
    """
    exact = reference_conv1d_transpose(input, filters, spec)
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != exact.shape:
        return float("inf"), False
    if actual.size == 0:
        return 0.0, True
    rtol, atol = TOLERANCES[spec.dtype]
    finite = np.isfinite(exact)
    same_specials = np.array_equal(np.isnan(exact), np.isnan(actual)) and \
        np.array_equal(np.where(finite, 0, exact), np.where(finite, 0, actual), equal_nan=True)
    if not finite.any():
        return 0.0, same_specials
    error = np.abs(actual[finite] - exact[finite])
    bound = rtol * magnitude(input, filters, spec)[finite] + atol
    return float(error.max()), bool(same_specials and (error <= bound).all())
