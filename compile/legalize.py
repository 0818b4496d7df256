"""ONNX-level rewrite before TVM import: every ConvTranspose gets explicit `pads`.

TVM 0.27's Relax ONNX importer ignores ConvTranspose's `output_shape` ("remains
unsupported", apache/tvm#19450; the earlier converter also ignored `output_padding` and
`auto_pad`, apache/tvm#18601). It then gives e.g. shape (1,2,9,7) instead of (1,2,10,8) on
ONNX's own backend test `test_convtranspose_output_shape`, and agreed with TensorFlow on 42
of 120 configurations (K 1..5, s 1..3, SAME and VALID, every valid width). The explicit form (`pads` + `output_padding`) is the one every
consumer agrees on, so `legalize_conv_transpose` rewrites every ConvTranspose, of any
rank, into it, following the ONNX operator text:

    total_padding[i] = stride[i] * (input_size[i] - 1) + output_padding[i]
                       + ((kernel_shape[i] - 1) * dilations[i] + 1) - output_shape[i]
    SAME_UPPER: pads[start_i] = total_padding[i] // 2; pads[end_i] = the rest
    otherwise:  pads[start_i] = total_padding[i] - total_padding[i] // 2; pads[end_i] = // 2

where output_shape[i] is the attribute if given, else `input_size[i] * stride[i]` under
SAME_UPPER / SAME_LOWER. Where this module follows onnxruntime (our reference backend and
fallback; DESIGN.md: what compile/ builds must agree with it) rather than the text
(measured, onnxruntime 1.32; microsoft/onnxruntime#4086, onnx/onnx#2788 for the history):
- `output_shape` wider than the full transposed output (negative total): onnxruntime pads
  zeros at the high end, up to `stride - 1` positions, and refuses more. Here the extra
  positions become `output_padding` (which the operator text defines as exactly that), and
  more than `stride - 1` is a ShapeError. The ONNX reference evaluator
  (onnx/reference/ops/op_conv_transpose.py) floor-divides the negative total instead and
  shifts the output.
- SAME_* without `output_shape` where the dilated kernel plus output_padding is narrower
  than the stride: the text asks for `input * stride` positions; onnxruntime and TVM clamp
  the total at 0 and give the full transposed width, one or more positions fewer. We clamp.
"""
from __future__ import annotations

import onnx
from onnx import helper

from ..graph.errors import ShapeError

_DOMAINS = ("", "ai.onnx")
_SAME = ("SAME_UPPER", "SAME_LOWER")


def legalize_conv_transpose(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose ConvTranspose nodes use explicit `pads` and `output_padding`.

    Nodes with `output_shape`, or `auto_pad` SAME_UPPER / SAME_LOWER / VALID, are
    rewritten; others are left as they are. Model-local functions are inlined first
    (`inline_functions`), so that nodes inside them are rewritten too and TVM's importer,
    which knows no local functions, sees only ordinary nodes.

    Raises:
      ShapeError (a ValueError): a node has `output_shape` but its input's spatial sizes
      are not static, or an attribute has the wrong length.
    """
    result = inline_functions(model)
    if not any(_needs_rewrite(node) for node in _all_nodes(result.graph)):
        # Explicit pads (e.g. every dynamic-width export): nothing to compute, and no need
        # for static shapes.
        return result
    shapes = _static_shapes(result)
    _rewrite_graph(result.graph, shapes)
    return result


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with its model-local functions inlined (none left).

    TVM 0.27's importer knows no local functions: a node calling one (e.g. our
    `ai.conv1d_transpose` `Conv1DTranspose`) is `OpNotImplemented`. Inlined, the body's
    nodes (Transpose of the TF-layout filters, ConvTranspose, Transpose) are ordinary
    graph nodes; the importer folds the Transpose of a constant, so the lowering still
    sees constant weights and picks its fast kernel.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if not result.functions:
        return result
    from onnx import inliner

    result = inliner.inline_local_functions(result)
    del result.functions[:]  # unused now (the inliner keeps them)
    used = {node.domain for node in _all_nodes(result.graph)}
    kept = [o for o in result.opset_import if o.domain in _DOMAINS or o.domain in used]
    del result.opset_import[:]
    result.opset_import.extend(kept)
    return result


def _is_conv_transpose(node: onnx.NodeProto) -> bool:
    return node.op_type == "ConvTranspose" and node.domain in _DOMAINS


def _needs_rewrite(node: onnx.NodeProto) -> bool:
    if not _is_conv_transpose(node):
        return False
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    auto_pad = _text(attributes.get("auto_pad", b"NOTSET"))
    return "output_shape" in attributes or auto_pad != "NOTSET"


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in _subgraphs(attribute):
                yield from _all_nodes(subgraph)


def _subgraphs(attribute: onnx.AttributeProto):
    if attribute.type == onnx.AttributeProto.GRAPH:
        yield attribute.g
    elif attribute.type == onnx.AttributeProto.GRAPHS:
        yield from attribute.graphs


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _static_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Value name -> list of dims (int, or None where unknown), after shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is a help, not a requirement: use what the model declares
        inferred = model
    shapes: dict[str, list] = {}

    def collect(graph: onnx.GraphProto):
        for initializer in graph.initializer:
            shapes[initializer.name] = list(initializer.dims)
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            tensor = value.type.tensor_type
            if tensor.HasField("shape"):
                shapes.setdefault(value.name, [
                    d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim])
        for node in graph.node:
            for attribute in node.attribute:
                for subgraph in _subgraphs(attribute):
                    collect(subgraph)

    collect(inferred.graph)
    return shapes


def _rewrite_graph(graph: onnx.GraphProto, shapes: dict[str, list]) -> None:
    for node in graph.node:
        if _needs_rewrite(node):
            _rewrite_node(node, shapes)
        for attribute in node.attribute:
            for subgraph in _subgraphs(attribute):
                _rewrite_graph(subgraph, shapes)


def _rewrite_node(node: onnx.NodeProto, shapes: dict[str, list]) -> None:
    where = f"ConvTranspose node {node.name or node.output[0]!r}"
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    data_shape = shapes.get(node.input[0])
    weight_shape = shapes.get(node.input[1]) if len(node.input) > 1 else None

    if "kernel_shape" in attributes:
        kernel = list(attributes["kernel_shape"])
    elif weight_shape is not None and None not in weight_shape[2:] and len(weight_shape) > 2:
        kernel = list(weight_shape[2:])
    else:
        raise ShapeError(f"{where}: kernel_shape is neither an attribute nor static in the "
                         f"weight {node.input[1]!r} (shape {weight_shape})")
    rank = len(kernel)
    strides = _per_axis(attributes, "strides", rank, 1, where)
    dilations = _per_axis(attributes, "dilations", rank, 1, where)
    output_padding = _per_axis(attributes, "output_padding", rank, 0, where)
    auto_pad = _text(attributes.get("auto_pad", b"NOTSET"))
    if auto_pad not in ("NOTSET", "VALID") + _SAME:
        raise ShapeError(f"{where}: auto_pad={auto_pad!r}; allowed: NOTSET, SAME_UPPER, "
                         f"SAME_LOWER, VALID")

    if "output_shape" in attributes:
        output_shape = list(attributes["output_shape"])
        if len(output_shape) == rank + 2:  # some producers include N and C; onnxruntime takes the tail
            output_shape = output_shape[2:]
        if len(output_shape) != rank:
            raise ShapeError(f"{where}: output_shape={output_shape} has {len(output_shape)} "
                             f"entries; the kernel has {rank} spatial axes")
        sizes = data_shape[2:] if data_shape is not None and len(data_shape) == rank + 2 else None
        if sizes is None or None in sizes:
            raise ShapeError(
                f"{where}: output_shape needs static spatial sizes of the input "
                f"{node.input[0]!r}, got shape {data_shape}; TVM's importer ignores "
                f"output_shape (apache/tvm#19450), so the padding must be computed before "
                f"import. Give the model static input shapes (onnx.tools.update_model_dims).")
        totals = [strides[i] * (sizes[i] - 1) + output_padding[i]
                  + (kernel[i] - 1) * dilations[i] + 1 - output_shape[i] for i in range(rank)]
    elif auto_pad in _SAME:
        # output = input * stride: the input size cancels out of total_padding, so this
        # needs no static shape. A negative total is clamped at 0, as onnxruntime and TVM's
        # own converter do (see the module docstring).
        totals = [max(output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 - strides[i], 0)
                  for i in range(rank)]
    else:
        if auto_pad == "VALID":
            totals = [0] * rank
        else:  # explicit pads already; nothing to do
            return
    begins, ends, new_output_padding = [], [], []
    for i, total in enumerate(totals):
        if total < 0:  # wider than the full output: zeros at the high end, as onnxruntime
            if output_padding[i] - total >= strides[i]:
                raise ShapeError(
                    f"{where}: output_shape={list(attributes['output_shape'])} is "
                    f"{output_padding[i] - total} positions wider than axis {i} of the "
                    f"transposed convolution can produce; at most stride - 1 = "
                    f"{strides[i] - 1} zero positions may be added")
            begins.append(0)
            ends.append(0)
            new_output_padding.append(output_padding[i] - total)
            continue
        if auto_pad == "SAME_UPPER":
            begin = total // 2
        else:  # NOTSET, SAME_LOWER, VALID with output_shape: the operator text's "Else"
            begin = total - total // 2
        begins.append(begin)
        ends.append(total - begin)
        new_output_padding.append(output_padding[i])

    kept = [a for a in node.attribute
            if a.name not in ("output_shape", "auto_pad", "pads", "output_padding")]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.extend([helper.make_attribute("pads", begins + ends),
                           helper.make_attribute("output_padding", new_output_padding)])


def _per_axis(attributes: dict, name: str, rank: int, default: int, where: str) -> list[int]:
    values = list(attributes.get(name, [default] * rank))
    if len(values) != rank:
        raise ShapeError(f"{where}: {name}={values} has {len(values)} entries; the kernel has "
                         f"{rank} spatial axes")
    return values
