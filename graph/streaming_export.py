"""Spec -> the ONNX model of one streaming step (issue 30): a chunk and the carried state in,
the positions that became final and the new state out.

    full   = conv1d_transpose(chunk), VALID: (c-1)*s + dk uncropped positions
    total  = full (zero-padded to c*s + S) + state (zero-padded at the end)
    output = total[:c*s]        every position no later frame reaches
    state  = total[c*s:]        S = max(dk - s, 0) positions the next chunk adds to

with dk = (K-1)*d + 1. The positions are uncropped: the layer's output is the stream of
`output`s with its first `pad_begin` positions dropped and cut at `out_width` (after the
last chunk, `state` holds the tail). `Conv1DTranspose.stream()` does the same in Python
and crops for you; this model is for runtimes that only run ONNX.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .arguments import make_spec
from .errors import ArgumentError
from .onnx_export import SUPPORTED_OPSETS, element_type, op_nodes
from .spec import Conv1DTransposeSpec

STATE_NAME, STATE_OUT_NAME = "state", "state_out"


def state_width(spec: Conv1DTransposeSpec) -> int:
    """Positions per channel a stream carries between steps."""
    return max(spec.dilated_kernel_width - spec.stride, 0)


def build_step_model(spec: Conv1DTransposeSpec, filters: np.ndarray, chunk_frames: int, *,
                     opset: int, name: str | None = None) -> onnx.ModelProto:
    """The step model for chunks of `chunk_frames` frames (see the module docstring).

    Inputs `input` (the chunk, in the spec's layout) and `state` (`[N, S, Cout]` in NWC,
    `[N, Cout, S]` in NCW, zeros before the first step); outputs `output` (`chunk_frames *
    strides` positions) and `state_out`.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ArgumentError(f"opset={opset!r} is not supported; allowed: "
                            f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    if not isinstance(chunk_frames, int) or isinstance(chunk_frames, bool) or chunk_frames < 1:
        raise ArgumentError(f"chunk_frames={chunk_frames!r} must be a positive int: the "
                            f"frames of each streamed chunk")
    s, dk, S = spec.stride, spec.dilated_kernel_width, state_width(spec)
    c, n, cout = chunk_frames, spec.batch, spec.out_channels
    ncw = spec.data_format == "NCW"
    full = (c - 1) * s + dk
    total = c * s + S

    def shape(width):
        return [n, cout, width] if ncw else [n, width, cout]

    chunk_spec = make_spec(tuple([n, spec.in_channels, c] if ncw else [n, c, spec.in_channels]),
                           spec.filters_shape, shape(full), s, "VALID", spec.data_format,
                           spec.dilation, spec.dtype)
    prefix = name or "conv1d_transpose"
    axis = 2 if ncw else 1
    weights = f"{prefix}/filters_iok"

    def ints(values, label):
        return numpy_helper.from_array(np.asarray(values, np.int64), f"{prefix}/{label}")

    def pad_end(amount):  # Pad's [begin..., end...] for the width axis alone
        pads = [0] * 6
        pads[3 + axis] = amount
        return pads

    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(
            np.asarray(filters, dtype=spec.dtype).transpose(2, 1, 0)), weights),
        ints(pad_end(total - full), "full_pads"), ints(pad_end(total - S), "state_pads"),
        ints([0], "zero"), ints([c * s], "split"), ints([total], "end"), ints([axis], "axis")]
    nodes = op_nodes(chunk_spec, "input", weights, f"{prefix}/full", prefix, "explicit")
    nodes += [
        helper.make_node("Pad", [f"{prefix}/full", f"{prefix}/full_pads"],
                         [f"{prefix}/full_padded"], name=f"{prefix}/pad_full"),
        helper.make_node("Pad", [STATE_NAME, f"{prefix}/state_pads"],
                         [f"{prefix}/state_padded"], name=f"{prefix}/pad_state"),
        helper.make_node("Add", [f"{prefix}/full_padded", f"{prefix}/state_padded"],
                         [f"{prefix}/total"], name=f"{prefix}/carry"),
        helper.make_node("Slice", [f"{prefix}/total", f"{prefix}/zero", f"{prefix}/split",
                                   f"{prefix}/axis"], ["output"], name=f"{prefix}/final"),
        helper.make_node("Slice", [f"{prefix}/total", f"{prefix}/split", f"{prefix}/end",
                                   f"{prefix}/axis"], [STATE_OUT_NAME], name=f"{prefix}/rest"),
    ]
    elem = element_type(spec.dtype)
    graph = helper.make_graph(
        nodes, f"{prefix}_step",
        [helper.make_tensor_value_info("input", elem, list(chunk_spec.input_shape)),
         helper.make_tensor_value_info(STATE_NAME, elem, shape(S))],
        [helper.make_tensor_value_info("output", elem, shape(c * s)),
         helper.make_tensor_value_info(STATE_OUT_NAME, elem, shape(S))],
        initializer=initializers,
        doc_string="one streaming step of tf.nn.conv1d_transpose: uncropped positions")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="conv1d-transpose")
    # Not "conv1d_transpose.spec": this is not the layer's model (spec_from_model).
    helper.set_model_props(model, {"conv1d_transpose.streaming_spec": spec.to_json(),
                                   "conv1d_transpose.chunk_frames": str(chunk_frames)})
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else 10)
    return model
