"""Shape and padding arithmetic of tf.nn.conv1d_transpose: pure functions of ints.

This module is the only place where padding is computed (TensorFlow's rules: the valid
output widths are those whose forward conv1d gives the input width). Everything
else reads the results from a `Conv1DTransposeSpec`.

The transposed convolution is the gradient of conv1d: an `O`-wide signal convolved
forward (with the same kernel, strides, dilation and padding) must give the `W`-wide
input. That forward relation is what decides which output widths are valid.
"""
from __future__ import annotations

PADDINGS = ("SAME", "VALID")


def dilated_kernel_width(kernel_width: int, dilation: int) -> int:
    """Width covered by a kernel of `kernel_width` taps spaced `dilation` apart.

    Args:
      kernel_width: number of taps K (>= 0).
      dilation: spacing d between taps (>= 1).
    Returns:
      `(K - 1) * d + 1`, or 0 for an empty kernel.
    """
    if kernel_width == 0:
        return 0
    return (kernel_width - 1) * dilation + 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def forward_output_width(width: int, kernel_width: int, stride: int, dilation: int,
                         padding: str) -> int:
    """Width that the forward conv1d gives for a `width`-wide input (TF's rule).

    SAME: `ceil(width / s)`; VALID: `ceil((width - dk + 1) / s)`, or 0 when the signal
    is narrower than the dilated kernel.
    """
    if padding == "SAME":
        return _ceil_div(width, stride)
    return max(_ceil_div(width - dilated_kernel_width(kernel_width, dilation) + 1, stride), 0)


def valid_output_widths(in_width: int, kernel_width: int, stride: int, dilation: int,
                        padding: str) -> range:
    """The output widths `O` for which the forward conv1d of `O` gives `in_width`.

    Args:
      in_width: the transposed op's input width W (>= 0).
      kernel_width, stride, dilation: K, s, d.
      padding: 'SAME' or 'VALID'.
    Returns:
      A contiguous range of non-negative widths (SAME: `[(W-1)s+1, Ws]`;
      VALID: `[(W-1)s+dk, Ws+dk-1]`), clipped at 0.
    """
    dk = dilated_kernel_width(kernel_width, dilation)
    if padding == "SAME":
        low, high = (in_width - 1) * stride + 1, in_width * stride
    else:
        low, high = (in_width - 1) * stride + dk, in_width * stride + dk - 1
    if in_width == 0:
        low = 0  # every signal narrower than one window gives an empty forward output
    return range(max(low, 0), max(high + 1, 0))


def input_width_for_output(out_width: int, kernel_width: int, stride: int, dilation: int,
                           padding: str) -> int:
    """The input width W implied by an output width O: the forward conv1d of O.

    Returns 0 where O is narrower than one window of the forward conv1d.
    """
    return forward_output_width(out_width, kernel_width, stride, dilation, padding)


def transpose_padding(in_width: int, out_width: int, kernel_width: int, stride: int,
                      dilation: int, padding: str) -> tuple[int, int, int]:
    """Padding that makes ONNX's ConvTranspose produce TF's output.

    Output position `o = w*s + k*d - pad_begin`; contributions outside `[0, O)` are
    dropped, and positions past the last contribution are zeros (`output_padding`).

    Args:
      in_width, out_width: W and O, with O in `valid_output_widths(W, ...)`.
      kernel_width, stride, dilation, padding: K, s, d, 'SAME' or 'VALID'.
    Returns:
      `(pad_begin, pad_end, output_padding)`, each >= 0, with
      `O == (W-1)*s + dk - pad_begin - pad_end + output_padding` and
      `output_padding < s`. For an empty input or kernel (nothing contributes) all
      three are 0.
    """
    dk = dilated_kernel_width(kernel_width, dilation)
    if in_width == 0 or kernel_width == 0:
        return 0, 0, 0
    full = (in_width - 1) * stride + dk  # width of the un-cropped transposed output
    if padding == "SAME":
        pad_total = max(full - out_width, 0)
        pad_begin = pad_total // 2  # TF puts the odd pixel at the end
    else:
        pad_total = 0
        pad_begin = 0
    pad_end = pad_total - pad_begin
    output_padding = out_width - (full - pad_total)
    return pad_begin, pad_end, output_padding


def layout_shape(data_format: str, batch, width: int, channels: int) -> tuple:
    """A tensor's shape in the user's layout: `[batch, width, channels]` for NWC,
    `[batch, channels, width]` for NCW."""
    if data_format == "NWC":
        return (batch, width, channels)
    return (batch, channels, width)
