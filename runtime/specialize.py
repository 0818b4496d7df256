"""A model with symbolic dimensions, specialised to the input shapes of one call (issue 30).

Vocoders are exported with a free time axis, and exporters write the arithmetic their
Python does on `x.shape` into the graph: torch's `dynamic_axes` export of EnCodec's SEANet
decoder computes each Pad's pads from Shape -> Gather -> Sub -> Cast -> Div -> Ceil ->
... (its `get_extra_padding_for_conv1d`), Demucs views its output through a Reshape whose
shape comes from Shape. TVM 0.27's ONNX importer stops at them ("relax.ceil requires
argument 0 (x) to be a tensor", "Dynamic pads are not supported yet", "Reshape expects
the input data to be a Tensor"), and our kernel needs static widths anyway. With the
input shapes of a call known, every such chain is a constant: fix the input dimensions,
infer shapes, turn each Shape (and Size) of a now-static tensor into its value, compute
what reads only constants (`placement.fold_constants`, onnx's reference evaluator), and
repeat until nothing changes (a folded Pad makes the next tensor's shape static, whose
Shape then folds). What is left is a static model like any other: `placement.normalized`
and the static path take it from there.

Pure functions of the ONNX graph; nothing here imports TVM or onnxruntime. Where TVM is
given the result (the split's segments, or the whole model), its artifact is cached under
the specialised model's own bytes: a later process with the same cache reuses it.
"""
from __future__ import annotations

import json
import math

import numpy
import onnx
from onnx import numpy_helper

from ..compile.manifest import SPECIALIZED_KEY, specialization  # noqa: F401 (public here)
from ..graph.errors import ArgumentError
from . import placement as _placement
# Properties of our own exports that describe the model as exported, no longer true of a
# specialisation (the spec's widths are the export's; `dynamic` says widths are free).
_STALE_KEYS = frozenset({"conv1d_transpose.spec", "conv1d_transpose.dynamic"})
# Enough for the chains exporters write: each round folds every Shape whose input the
# previous round made static; a chain through N Pads or Reshapes needs about N rounds.
_MAX_ROUNDS = 64


def free_inputs(model: onnx.ModelProto) -> dict[str, list]:
    """Input name -> its dims (ints, dim_param names, or None) for each graph input with a
    dimension that is not a fixed number."""
    constants = {t.name for t in model.graph.initializer}
    found = {}
    for value in model.graph.input:
        if value.name in constants:
            continue
        dims = _dims(value.type)
        if dims is None or any(not isinstance(d, int) for d in dims):
            found[value.name] = dims
    return found


def waits_on_shapes(model: onnx.ModelProto, *, symbolic_batch: bool = False) -> bool:
    """True where the model has a free input dimension and a ConvTranspose or stride-1
    Conv that our kernel would take, but for the static input shape it lacks: the nodes a
    specialisation per input shape gives to the kernel.

    `model` as given (it is normalized here: weight norm folded, Constants as
    initializers). `symbolic_batch`: a node whose input is static but for its batch does
    not wait (a whole model on TVM keeps the kernel with a symbolic batch, one artifact
    for every batch; the per-node placement needs every dimension)."""
    if not free_inputs(model):
        return False
    from ..compile.forward_conv import as_conv_transpose

    model = _placement.normalized(model)
    types = _placement.value_types(model)
    weights = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2 or \
                node.input[1] not in weights or \
                _placement.static_shape(types.get(node.input[0])) is not None:
            continue
        dims = _dims(types[node.input[0]]) if node.input[0] in types else None
        if symbolic_batch and dims and all(isinstance(d, int) for d in dims[1:]):
            continue
        weight = weights[node.input[1]]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if len(weight.dims) == 4 and weight.dims[2] == 1 and \
                _placement.unit_height(attributes) and attributes.get("group", 1) == 1:
            return True  # tf2onnx's 2-D form, made 1-D by `normalized` once shapes are static
        if node.op_type == "Conv":
            if as_conv_transpose(node, weights, None) is not None:
                return True  # kept a Conv by `normalized` only for want of its input's shape
            continue
        rank = len(weight.dims)
        assumed = dict(types)
        assumed[node.input[0]] = onnx.helper.make_tensor_type_proto(
            weights[node.input[1]].data_type, [1] * rank)
        if _placement.kernel_refusal(node, model, assumed) is None:
            return True
    return False


def input_shapes(model: onnx.ModelProto, feeds: dict) -> dict[str, tuple[int, ...]]:
    """The shape of each graph input in `feeds`, checked against the model's dims: the
    rank, every fixed dimension, and one value per dim_param name across the inputs.

    Raises:
      ArgumentError naming the input, the shape given and the shape the model takes.
    """
    constants = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in constants]
    if not isinstance(feeds, dict):
        raise ArgumentError(f"feeds must be a dict of input name -> array, "
                            f"got {type(feeds).__name__}")
    missing = [v.name for v in inputs if v.name not in feeds]
    if missing:
        raise ArgumentError(f"feeds lack the model's inputs {missing}; inputs: "
                            f"{[v.name for v in inputs]}")
    shapes, named = {}, {}
    for value in inputs:
        shape = tuple(int(n) for n in numpy.shape(feeds[value.name]))
        dims = _dims(value.type)
        if dims is not None and (len(dims) != len(shape) or any(
                (isinstance(d, int) and d != n) or (isinstance(d, str) and
                                                    named.setdefault(d, n) != n)
                for d, n in zip(dims, shape))):
            taken = [d if d is not None else "?" for d in dims]
            raise ArgumentError(f"input {value.name!r} has shape {shape}; the model takes "
                                f"{taken}" + _named_hint(dims, named))
        shapes[value.name] = shape
    return shapes


def specialized(model: onnx.ModelProto, shapes: dict) -> onnx.ModelProto:
    """A copy of `model` with the inputs' shapes fixed to `shapes` (input name -> ints,
    from `input_shapes`) and every value computed from shapes alone replaced by its
    constant. Every node keeps its name in `placement.node_names`' terms (the nodes that
    are gone were folded); the model's properties gain SPECIALIZED_KEY.

    A chain the reference evaluator cannot compute is left in the graph as it is: the
    static path then refuses the nodes it feeds in words, as before."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for node, name in zip(graph.node, _placement.node_names(graph)):
        node.name = name  # (names by index would move as nodes fold away)
    for value in graph.input:
        if value.name in shapes:
            _set_dims(value.type, shapes[value.name])
    # What the exporter inferred with symbolic dims would be merged with (and, for a
    # named dim, could contradict) what inference finds now: let it infer afresh.
    del graph.value_info[:]
    for value in graph.output:
        dims = _dims(value.type)
        if dims is not None:
            _set_dims(value.type, [None] * len(dims))
    model = _inferred(model)
    for _ in range(_MAX_ROUNDS):
        changed = _constants_as_initializers(model.graph) | _shapes_as_constants(model)
        changed |= _placement.fold_constants(model)
        if not changed:
            break
        model = _inferred(model)
    _drop_no_ops(model)
    properties = {p.key: p.value for p in model.metadata_props if p.key not in _STALE_KEYS}
    onnx.helper.set_model_props(model, {**properties, SPECIALIZED_KEY: describe(shapes)})
    return model


def describe(shapes: dict) -> str:
    """The value of SPECIALIZED_KEY: {"inputs": {name: [dims]}}, as JSON."""
    return json.dumps({"inputs": {name: list(shape) for name, shape in shapes.items()}},
                      sort_keys=True)


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference that fails on a specialisation leaves Shape unfolded
        return model


def _constants_as_initializers(graph: onnx.GraphProto) -> bool:
    """Constant nodes (torch writes one for every literal of shape arithmetic) become
    initializers, so that the nodes reading them read only constants."""
    kept, changed = [], False
    for node in graph.node:
        tensor = _constant_value(node)
        if tensor is None:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(kept)
    return changed


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or \
            len(node.attribute) != 1:
        return None
    attribute = node.attribute[0]
    value = onnx.helper.get_attribute_value(attribute)
    if attribute.name == "value":
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        return tensor
    dtypes = {"value_float": numpy.float32, "value_floats": numpy.float32,
              "value_int": numpy.int64, "value_ints": numpy.int64}
    if attribute.name in dtypes:
        return numpy_helper.from_array(numpy.array(value, dtypes[attribute.name]))
    return None  # sparse and string constants: left to the runtime


def _shapes_as_constants(model: onnx.ModelProto) -> bool:
    """Each Shape or Size node whose input now has a static shape becomes an initializer
    holding that shape (Shape's `start`/`end`, opset 15, slice it as Python does)."""
    graph = model.graph
    types = _placement.value_types(model)
    kept, changed = [], False
    for node in graph.node:
        shape = _placement.static_shape(types.get(node.input[0])) \
            if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx") \
            and node.input else None
        if shape is None:
            kept.append(node)
            continue
        if node.op_type == "Size":
            value = numpy.array(math.prod(shape), numpy.int64)
        else:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            start, end = attributes.get("start", 0), attributes.get("end", None)
            value = numpy.array(shape[start:end], numpy.int64)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(kept)
    return changed


def _drop_no_ops(model: onnx.ModelProto) -> None:
    """Remove the Pads of zero pads and the Slices that keep all of a static tensor, in
    place: what torch's export of EnCodec's SConv1d leaves once its widths are known (a
    k1 conv's `pad1d` of 0, `padded[..., :end]` of the whole width), each otherwise a
    copy on onnxruntime between two of our kernel's layers."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    types = _placement.value_types(model)
    # Kept where a graph output is theirs, or a subgraph (If, Loop) reads them by name.
    keep = {o.name for o in graph.output} | set().union(*[
        _placement.read_names(node) - set(node.input) for node in graph.node])
    outputs = {o.name for o in graph.output}
    renamed, kept = {}, []
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        if node.domain in ("", "ai.onnx") and node.output[0] not in keep and \
                len(node.output) == 1 and _is_no_op(node, constants, types):
            renamed[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    if not renamed:
        return
    del graph.node[:]
    graph.node.extend(kept)
    for value in [v for v in graph.value_info if v.name in renamed]:
        graph.value_info.remove(value)
    read = set().union(*[_placement.read_names(node) for node in kept]) | outputs
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)


def _is_no_op(node: onnx.NodeProto, constants: dict, types: dict) -> bool:
    def value(index):
        name = node.input[index] if len(node.input) > index else ""
        return numpy_helper.to_array(constants[name]) if name in constants else None

    if node.op_type == "Pad" and len(node.input) > 1:
        pads = value(1)
        return pads is not None and not pads.any()
    if node.op_type != "Slice" or len(node.input) < 3:
        return False
    shape = _placement.static_shape(types.get(node.input[0]))
    starts, ends = value(1), value(2)
    axes = value(3) if len(node.input) > 3 and node.input[3] else \
        numpy.arange(len(starts) if starts is not None else 0)
    steps = value(4) if len(node.input) > 4 and node.input[4] else numpy.ones_like(axes)
    if shape is None or any(v is None for v in (starts, ends, axes, steps)):
        return False
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = shape[int(axis)]
        start = min(max(int(start) + dim if start < 0 else int(start), 0), dim)
        end = int(end) + dim if end < 0 else int(end)
        if step != 1 or start != 0 or end < dim:
            return False
    return True


def _dims(type_proto: onnx.TypeProto) -> list | None:
    """The dims of a tensor type: ints, dim_param names, None for an unnamed free one;
    None where the rank is unknown."""
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor.shape.dim]


def _set_dims(type_proto: onnx.TypeProto, dims) -> None:
    shape = type_proto.tensor_type.shape
    del shape.dim[:]
    for value in dims:
        dim = shape.dim.add()
        if value is not None:
            dim.dim_value = int(value)


def _named_hint(dims, named) -> str:
    names = [d for d in dims if isinstance(d, str) and d in named]
    return f" ({', '.join(f'{n}={named[n]}' for n in names)} from the feeds)" if names else ""
