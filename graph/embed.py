"""Insert conv1d_transpose into an existing ONNX model: for users exporting bigger graphs."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .arguments import make_spec
from .errors import ArgumentError, ShapeError
from .onnx_export import (DOMAIN, check_exportable, function_call, make_function, op_nodes)

# Our nodes are ConvTranspose-11 and Transpose-1/13: any default-domain opset from 11 on.
MIN_OPSET = 11


def add_conv1d_transpose(model: onnx.ModelProto, input_name: str, filters, output_shape,
                         strides, padding="SAME", data_format="NWC", dilations=None, *,
                         name: str | None = None, input_shape=None, form: str = "output_shape",
                         as_function: bool = False) -> str:
    """Add the op to `model` (in place), reading `input_name`; return the output's name.

    Args:
      model: the ModelProto to extend.
      input_name: a graph input, initializer or node output of `model`.
      filters: TF-layout `[K, out, in]` numpy array (added as an initializer), or the name
        of an existing initializer / graph input holding them in TF's layout.
      output_shape, strides, padding, data_format, dilations: as in TF. The batch entry
        of `output_shape` may be None when the input's batch is symbolic.
      name: prefix for the new nodes and tensors (made unique in the graph).
      input_shape: the input's shape, when shape inference cannot find it.
      form: "output_shape" or "explicit" (see graph/onnx_export.py).
      as_function: one node calling our local function instead of three nodes.
    Raises:
      ArgumentError / ShapeError (ValueError) naming what does not fit.
    """
    if not isinstance(model, onnx.ModelProto):
        raise ArgumentError(f"model must be an onnx.ModelProto, got {type(model).__name__}")
    opset = _default_opset(model)
    if opset < MIN_OPSET:
        raise ArgumentError(f"the model imports opset {opset} of the default domain; "
                            f"conv1d_transpose needs {MIN_OPSET} or newer")
    graph = model.graph
    taken = _names(graph)
    if input_name not in taken:
        raise ArgumentError(f"input_name={input_name!r} is not a tensor of the model")
    prefix = _unique(name or "conv1d_transpose", taken)

    shape, elem = _tensor_info(model, input_name)
    if input_shape is not None:
        shape = [int(v) for v in input_shape]
    if shape is None or len(shape) != 3:
        raise ShapeError(f"the shape of {input_name!r} is unknown or not rank 3 ({shape}); "
                         f"pass input_shape=[batch, width, channels] (or NCW)")
    symbolic_batch = not isinstance(shape[0], int)
    if any(not isinstance(v, int) for v in shape[1:]):
        raise ShapeError(f"{input_name!r} has shape {shape}: width and channels must be static")
    dtype = helper.tensor_dtype_to_np_dtype(elem).name if elem else None

    if isinstance(filters, str):
        filters_shape, filters_elem = _tensor_info(model, filters)
        if filters_shape is None or any(not isinstance(v, int) for v in filters_shape):
            raise ShapeError(f"filters={filters!r}: its shape must be static in the model")
        filters_name, array = filters, None
        dtype = dtype or helper.tensor_dtype_to_np_dtype(filters_elem).name
    else:
        array = np.asarray(filters)
        filters_shape = list(array.shape)
        filters_name = f"{prefix}/filters"
    dtype = dtype or array.dtype.name

    batch = 1 if symbolic_batch else shape[0]
    output_shape = list(output_shape)
    if symbolic_batch and len(output_shape) == 3 and output_shape[0] is None:
        output_shape[0] = batch
    spec = make_spec([batch] + shape[1:], filters_shape, output_shape, strides, padding,
                     data_format, dilations, dtype)
    check_exportable(spec)
    if array is not None:
        graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(array.astype(spec.dtype)), filters_name))

    output = f"{prefix}/output"
    if as_function:
        graph.node.append(function_call(spec, input_name, filters_name, output, prefix))
        if not any(f.domain == DOMAIN and f.name == graph.node[-1].op_type for f in model.functions):
            model.functions.append(make_function(spec, opset))
        if not any(o.domain == DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    else:
        graph.node.extend(op_nodes(spec, input_name, filters_name, output, prefix, form,
                                   filters_layout="tf"))
    return output


def _default_opset(model) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return 0


def _names(graph) -> set[str]:
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.output)
        names.update(node.input)
        names.add(node.name)
    return names


def _unique(prefix: str, taken: set[str]) -> str:
    candidate, index = prefix, 1
    while any(name == candidate or name.startswith(candidate + "/") for name in taken):
        candidate, index = f"{prefix}_{index}", index + 1
    return candidate


def _tensor_info(model, name):
    """(shape with ints or dim_param strings, element type) of a tensor, via shape inference."""
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return list(tensor.dims), tensor.data_type
    inferred = onnx.shape_inference.infer_shapes(model)
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.name == name:
            tensor_type = value.type.tensor_type
            if not tensor_type.HasField("shape"):
                return None, tensor_type.elem_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in tensor_type.shape.dim]
            return dims, tensor_type.elem_type
    return None, 0
