"""Spec -> ONNX model: Transpose (NWC only) -> ConvTranspose -> Transpose (NWC only).

Two forms of the ConvTranspose node (measured against TensorFlow on 120 configurations:
K 1..5, s 1..3, SAME and VALID, W 4 and 5, every valid O):
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


def check_exportable(spec: Conv1DTransposeSpec) -> None:
    if spec.in_width == 0 or spec.kernel_width == 0:
        raise ArgumentError(
            f"ONNX ConvTranspose cannot express an empty input width or kernel width "
            f"(in_width={spec.in_width}, kernel_width={spec.kernel_width}); the output is "
            f"all zeros, which conv1d_transpose returns without a model")


def width_is_a_function_of_input(spec: Conv1DTransposeSpec) -> bool:
    """True when O follows from W alone (SAME: O = W*s; VALID: O = (W-1)*s + dk).

    Then pads and output_padding are the same for every input width, so one model (and
    one TVM artifact) serves them all.
    """
    if spec.padding == "SAME":
        return spec.out_width == spec.in_width * spec.stride
    return spec.out_width == (spec.in_width - 1) * spec.stride + spec.dilated_kernel_width


def op_nodes(spec: Conv1DTransposeSpec, data: str, weights: str, output: str, prefix: str,
             form: str, filters_layout: str = "iok") -> list[onnx.NodeProto]:
    """The op as nodes: Transpose (NWC) -> ConvTranspose -> Transpose (NWC).

    `weights` names a tensor in ONNX's `[in, out, K]` order (`filters_layout='iok'`) or in
    TF's `[K, out, in]` order (`'tf'`, transposed by a node). One place builds these
    nodes for standalone models, embedded ops and the function body.
    """
    nodes = []
    if spec.data_format == "NWC":
        nodes.append(helper.make_node("Transpose", [data], [f"{prefix}/input_ncw"],
                                      name=f"{prefix}/to_ncw", perm=[0, 2, 1]))
        data = f"{prefix}/input_ncw"
    if filters_layout == "tf":
        nodes.append(helper.make_node("Transpose", [weights], [f"{prefix}/filters_iok"],
                                      name=f"{prefix}/filters_to_iok", perm=[2, 1, 0]))
        weights = f"{prefix}/filters_iok"
    conv_out = f"{prefix}/output_ncw" if spec.data_format == "NWC" else output
    nodes.append(helper.make_node(
        "ConvTranspose", [data, weights], [conv_out], name=f"{prefix}/conv_transpose",
        doc_string="tf.nn.conv1d_transpose " + json.dumps(spec.tf_arguments()),
        **conv_transpose_attributes(spec, form)))
    if spec.data_format == "NWC":
        nodes.append(helper.make_node("Transpose", [conv_out], [output],
                                      name=f"{prefix}/to_nwc", perm=[0, 2, 1]))
    return nodes


def function_name(spec: Conv1DTransposeSpec) -> str:
    return "Conv1DTranspose" if spec.data_format == "NWC" else "Conv1DTransposeNCW"


def make_function(spec: Conv1DTransposeSpec, opset: int) -> onnx.FunctionProto:
    """The op as an ONNX local function in our domain: inputs (input, filters in TF's
    [K, out, in] layout), output (output); strides, dilations, pads and output_padding are
    attributes of the calling node, so one function serves every layer of a layout."""
    body = op_nodes(spec, "input", "filters", "output", "body", "explicit", filters_layout="tf")
    conv = next(node for node in body if node.op_type == "ConvTranspose")
    del conv.attribute[:]
    for attribute in ("strides", "dilations", "pads", "output_padding"):
        reference = onnx.AttributeProto(name=attribute, ref_attr_name=attribute,
                                        type=onnx.AttributeProto.INTS)
        conv.attribute.append(reference)
    conv.doc_string = ""
    return helper.make_function(
        DOMAIN, function_name(spec), ["input", "filters"], ["output"], body,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["strides", "dilations", "pads", "output_padding"],
        doc_string=f"tf.nn.conv1d_transpose ({spec.data_format}): Transpose -> ConvTranspose -> Transpose")


def function_call(spec: Conv1DTransposeSpec, data: str, filters_tf: str, output: str,
                  prefix: str) -> onnx.NodeProto:
    """One node calling `make_function(spec)`; filters in TF's layout."""
    return helper.make_node(
        function_name(spec), [data, filters_tf], [output], name=f"{prefix}/conv1d_transpose",
        domain=DOMAIN, strides=[spec.stride], dilations=[spec.dilation],
        pads=[spec.pad_begin, spec.pad_end], output_padding=[spec.output_padding],
        doc_string="tf.nn.conv1d_transpose " + json.dumps(spec.tf_arguments()))


def io_shapes(spec: Conv1DTransposeSpec, dynamic_batch: bool, dynamic_width: bool):
    """Input and output shapes, with symbolic batch/width dimensions where asked."""
    batch = "batch" if dynamic_batch else spec.batch
    in_width = "in_width" if dynamic_width else spec.in_width
    out_width = "out_width" if dynamic_width else spec.out_width
    if spec.data_format == "NWC":
        return [batch, in_width, spec.in_channels], [batch, out_width, spec.out_channels]
    return [batch, spec.in_channels, in_width], [batch, spec.out_channels, out_width]


def build_model(spec: Conv1DTransposeSpec, filters: np.ndarray | None = None, *,
                form: str = "output_shape", portable: bool = False,
                opset: int = DEFAULT_OPSET, name: str | None = None,
                dynamic_batch: bool = False, dynamic_width: bool = False,
                as_function: bool = False) -> onnx.ModelProto:
    """The standalone ONNX model of one conv1d_transpose call.

    Args:
      spec: the validated call.
      filters: TF-layout `[K, out, in]` weights to embed as an initializer (stored in
        ONNX's `[in, out, K]` order; in TF's order with `as_function`), or None to make
        them a second graph input `filters` in TF's layout, transposed by a node.
      form: "output_shape" (default) or "explicit"; see the module docstring.
      portable: the form every measured consumer runs correctly ("explicit").
      opset: ONNX opset of the default domain, in `SUPPORTED_OPSETS`.
      name: prefix of node names (TF's `name` argument); default "conv1d_transpose".
      dynamic_batch: a symbolic batch dimension.
      dynamic_width: symbolic input and output widths; needs O = W*s (SAME) or
        O = (W-1)*s + dk (VALID), and uses the explicit form (output_shape is static).
      as_function: one node calling an ONNX local function (domain
        "ai.conv1d_transpose") instead of the three nodes.
    Returns:
      A model with input `input`, optional input `filters`, and output `output`, in the
      user's layout, that passes `onnx.checker.check_model(full_check=True)`.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ArgumentError(f"opset={opset!r} is not supported; allowed: "
                            f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    conv_transpose_attributes(spec, form)  # validates form
    check_exportable(spec)
    if dynamic_width and not width_is_a_function_of_input(spec):
        raise ArgumentError(
            f"dynamic_width=True needs an output width that follows from the input width "
            f"(SAME: O = W*strides = {spec.in_width * spec.stride}; VALID: O = (W-1)*strides "
            f"+ (K-1)*dilations + 1 = {(spec.in_width - 1) * spec.stride + spec.dilated_kernel_width}"
            f"); output_shape asks for {spec.out_width} with padding={spec.padding!r}")
    if portable or dynamic_width or as_function:
        form = "explicit"
    prefix = name or "conv1d_transpose"
    elem = element_type(spec.dtype)
    input_shape, output_shape = io_shapes(spec, dynamic_batch, dynamic_width)
    inputs = [helper.make_tensor_value_info(INPUT_NAME, elem, input_shape)]
    initializers, functions = [], []
    if filters is None:
        inputs.append(helper.make_tensor_value_info(FILTERS_NAME, elem, list(spec.filters_shape)))
        weights, layout = FILTERS_NAME, "tf"
    elif as_function:
        weights, layout = f"{prefix}/filters", "tf"
        initializers.append(numpy_helper.from_array(
            np.ascontiguousarray(np.asarray(filters, dtype=spec.dtype)), weights))
    else:
        weights, layout = f"{prefix}/filters_iok", "iok"
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(
            np.asarray(filters, dtype=spec.dtype).transpose(2, 1, 0)), weights))
    if as_function:
        nodes = [function_call(spec, INPUT_NAME, weights, OUTPUT_NAME, prefix)]
        functions.append(make_function(spec, opset))
    else:
        nodes = op_nodes(spec, INPUT_NAME, weights, OUTPUT_NAME, prefix, form, layout)

    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, elem, output_shape)]
    graph = helper.make_graph(nodes, prefix, inputs, outputs, initializer=initializers,
                              doc_string="tf.nn.conv1d_transpose in ONNX "
                                         "(Transpose -> ConvTranspose -> Transpose)")
    opsets = [helper.make_opsetid("", opset)]
    if as_function:
        opsets.append(helper.make_opsetid(DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, functions=functions,
                              producer_name="conv1d-transpose", producer_version=_version())
    metadata = {"tf." + key: json.dumps(value) for key, value in spec.tf_arguments().items()}
    metadata["conv1d_transpose.spec"] = spec.to_json()
    metadata["conv1d_transpose.form"] = form
    metadata["conv1d_transpose.dynamic"] = json.dumps(
        {"batch": dynamic_batch, "width": dynamic_width})
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
