"""A stride-1 1-D Conv as the transposed convolution our kernel computes (issue 29).

A vocoder is mostly stride-1 Conv layers between its few ConvTranspose upsamplers, and TVM
0.27 compiles Conv with its unscheduled default lowering. Written as a ConvTranspose, the
same layer runs on the scheduled polyphase kernel (stride 1: one phase, a GEMM over taps
and input channels):

    Conv:           y[u] = sum_k x[u + k*d - pl] * w[k]
    ConvTranspose:  y[u] = sum_k x[u - k*d + pb] * f[k]

so f[k] = w[K-1-k] (taps reversed, and the channel axes swapped: Conv's weights are
[Cout, Cin, K], ConvTranspose's [Cin, Cout, K]) with pb = (K-1)*d - pl and pe = (K-1)*d - pr.
That needs pl, pr <= (K-1)*d (a transposed convolution's pads crop and cannot widen):
every 'same' and 'valid' Conv of a vocoder. Strided Convs (encoders) are left alone.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_DOMAINS = ("", "ai.onnx")
# Suffix of the reversed, transposed weights' initializer.
WEIGHTS_SUFFIX = "/as_conv_transpose"


def transpose_pads(attributes: dict, kernel: int, input_width: int | None) -> list[int] | None:
    """The ConvTranspose pads [pb, pe] of a stride-1 1-D Conv, or None where it has none
    (a stride, or pads wider than the dilated kernel)."""
    if attributes.get("strides", [1]) != [1]:
        return None
    dilation = attributes.get("dilations", [1])
    if len(dilation) != 1:
        return None
    span = (kernel - 1) * dilation[0]
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        small, large = span // 2, span - span // 2
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        begin, end = 0, 0
    elif auto_pad == "NOTSET":
        pads = attributes.get("pads", [0, 0])
        if len(pads) != 2:
            return None
        begin, end = pads
    else:
        return None
    if not (0 <= begin <= span and 0 <= end <= span):
        return None
    if input_width is not None and input_width + begin + end - span < 1:
        return None
    return [span - begin, span - end]


def as_conv_transpose(node: onnx.NodeProto, weights: dict, input_width: int | None):
    """(ConvTranspose node with `node`'s name, its weights' TensorProto) computing the same
    as a 1-D Conv `node` whose weights (and bias) are in `weights`; None where it cannot
    (not a 1-D Conv of group 1 with constant weights, a stride, pads wider than the
    dilated kernel)."""
    if node.op_type != "Conv" or node.domain not in _DOMAINS or len(node.input) < 2:
        return None
    weight = weights.get(node.input[1])
    if weight is None or len(weight.dims) != 3:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in weights:
        return None
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("group", 1) != 1:
        return None
    kernel = weight.dims[2]
    if attributes.get("kernel_shape", [kernel]) != [kernel]:
        return None
    pads = transpose_pads(attributes, kernel, input_width)
    if pads is None:
        return None
    array = numpy_helper.to_array(weight)
    flipped = np.ascontiguousarray(array.transpose(1, 0, 2)[:, :, ::-1])
    tensor = numpy_helper.from_array(flipped, weight.name + WEIGHTS_SUFFIX)
    inputs = [node.input[0], tensor.name] + list(node.input[2:3])
    new = helper.make_node("ConvTranspose", inputs, list(node.output), name=node.name,
                           kernel_shape=[kernel], strides=[1], pads=pads,
                           dilations=attributes.get("dilations", [1]))
    return new, tensor
