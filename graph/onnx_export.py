"""Spec -> ONNX model: Transpose (NWC only) -> ConvTranspose -> Transpose (NWC only).

Two forms of the ConvTranspose node (SPEC.md section 4, measured on 120 TF configs):
- "output_shape" (the default): `output_shape=[O]` with `auto_pad='SAME_UPPER'`. ONNX's
  rule for output_shape puts the odd padding pixel at the end only under SAME_UPPER,
  as TF does; under NOTSET onnxruntime puts it first (microsoft/onnxruntime#4086,
  onnx/onnx#2788). onnxruntime: 120/120; TVM 0.27's importer ignores output_shape
  (apache/tvm#19450), so compile/ rewrites this form before import.
- "explicit": `pads=[pad_begin, pad_end]` and `output_padding=[p]`, computed once in
  graph/shapes.py. Every measured consumer (onnxruntime, onnx's ReferenceEvaluator,
  TVM) agrees with TF on it.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ArgumentError
from .spec import Conv1DTransposeSpec

# ConvTranspose is unchanged since opset 11; Transpose's last change that matters to
# us is opset 13. Tested: 13, 17 (default), 21.
DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 22)
FORMS = ("output_shape", "explicit")
DOMAIN = "ai.conv1d_transpose"

_ELEMENT_TYPES = {
    "float16": TensorProto.FLOAT16,
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
}
INPUT_NAME = "input"
FILTERS_NAME = "filters"
OUTPUT_NAME = "output"


def element_type(dtype: str) -> int:
    return _ELEMENT_TYPES[dtype]


def conv_transpose_attributes(spec: Conv1DTransposeSpec, form: str) -> dict:
    """The ConvTranspose attributes for `spec` in one of the two `FORMS`."""
    attributes = {
        "kernel_shape": [spec.kernel_width],
        "strides": [spec.stride],
        "dilations": [spec.dilation],
        "group": 1,
    }
    if form == "output_shape":
        attributes.update(output_shape=[spec.out_width], auto_pad="SAME_UPPER")
    elif form == "explicit":
        attributes.update(pads=[spec.pad_begin, spec.pad_end],
                          output_padding=[spec.output_padding])
    else:
        raise ArgumentError(f"form={form!r} is not supported; allowed: {', '.join(FORMS)}")
    return attributes


def build_model(spec: Conv1DTransposeSpec, filters: np.ndarray | None = None, *,
                form: str = "output_shape", opset: int = DEFAULT_OPSET,
                name: str | None = None) -> onnx.ModelProto:
    """The standalone ONNX model of one conv1d_transpose call.

    Args:
      spec: the validated call.
      filters: TF-layout `[K, out, in]` weights to embed as an initializer (already in
        ONNX's `[in, out, K]` order), or None to make them a second graph input
        `filters` in TF's layout, transposed by a node.
      form: "output_shape" (default) or "explicit"; see the module docstring.
      opset: ONNX opset of the default domain, in `SUPPORTED_OPSETS`.
      name: prefix of node names (TF's `name` argument); default "conv1d_transpose".
    Returns:
      A model with input `input`, optional input `filters`, and output `output`, in the
      user's layout, that passes `onnx.checker.check_model(full_check=True)`.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ArgumentError(f"opset={opset!r} is not supported; allowed: "
                            f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    if spec.in_width == 0 or spec.kernel_width == 0:
        raise ArgumentError(
            f"ONNX ConvTranspose cannot express an empty input width or kernel width "
            f"(in_width={spec.in_width}, kernel_width={spec.kernel_width}); the output is "
            f"all zeros, which conv1d_transpose returns without a model")
    prefix = name or "conv1d_transpose"
    elem = element_type(spec.dtype)
    nodes, initializers = [], []
    inputs = [helper.make_tensor_value_info(INPUT_NAME, elem, list(spec.input_shape))]

    data = INPUT_NAME
    if spec.data_format == "NWC":
        nodes.append(helper.make_node("Transpose", [INPUT_NAME], [f"{prefix}/input_ncw"],
                                      name=f"{prefix}/to_ncw", perm=[0, 2, 1]))
        data = f"{prefix}/input_ncw"

    weights = f"{prefix}/filters_iok"
    if filters is not None:
        array = np.ascontiguousarray(np.asarray(filters, dtype=spec.dtype).transpose(2, 1, 0))
        initializers.append(numpy_helper.from_array(array, weights))
    else:
        inputs.append(helper.make_tensor_value_info(FILTERS_NAME, elem, list(spec.filters_shape)))
        nodes.append(helper.make_node("Transpose", [FILTERS_NAME], [weights],
                                      name=f"{prefix}/filters_to_iok", perm=[2, 1, 0]))

    conv_out = f"{prefix}/output_ncw" if spec.data_format == "NWC" else OUTPUT_NAME
    nodes.append(helper.make_node(
        "ConvTranspose", [data, weights], [conv_out], name=f"{prefix}/conv_transpose",
        doc_string="tf.nn.conv1d_transpose " + json.dumps(spec.tf_arguments()),
        **conv_transpose_attributes(spec, form)))
    if spec.data_format == "NWC":
        nodes.append(helper.make_node("Transpose", [conv_out], [OUTPUT_NAME],
                                      name=f"{prefix}/to_nwc", perm=[0, 2, 1]))

    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, elem, list(spec.output_shape))]
    graph = helper.make_graph(nodes, prefix, inputs, outputs, initializer=initializers,
                              doc_string="tf.nn.conv1d_transpose in ONNX "
                                         "(Transpose -> ConvTranspose -> Transpose)")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="conv1d-transpose", producer_version=_version())
    metadata = {"tf." + key: json.dumps(value) for key, value in spec.tf_arguments().items()}
    metadata["conv1d_transpose.spec"] = spec.to_json()
    metadata["conv1d_transpose.form"] = form
    onnx.helper.set_model_props(model, metadata)
    # IR version 8 keeps the model loadable by onnxruntime builds a few years old.
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else 10)
    return model


def spec_from_model(model: onnx.ModelProto) -> Conv1DTransposeSpec | None:
    """The spec recorded in a model built here, or None for any other model."""
    for prop in model.metadata_props:
        if prop.key == "conv1d_transpose.spec":
            return Conv1DTransposeSpec.from_json(prop.value)
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("conv1d-transpose")
    except PackageNotFoundError:
        return "0+unknown"
