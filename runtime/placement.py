"""Per-node placement (issue 29): which nodes of a model our TVM kernel runs, and the model
cut into segments that each run on one backend.

A vocoder exported from PyTorch is mostly Conv, activations and a few ConvTranspose. TVM
0.27 compiles the Conv nodes with its unscheduled default lowering (a HiFi-GAN V1
generator took ~20 s a call against onnxruntime's ~0.5 s, 99.7% of it in those Convs), and
its ONNX importer has no LSTM at all. So `auto` gives TVM only the nodes our scheduled
kernel takes: ConvTranspose, and stride-1 Conv written as one (compile/forward_conv.py),
with the layout Transposes around them; every other node goes to onnxruntime.

Pure functions of the ONNX graph; nothing here imports TVM or onnxruntime.
"""
from __future__ import annotations

import dataclasses

import numpy
import onnx

# Nodes whose cost grows with the product of two dimensions: a model that has one we cannot
# schedule is not given to TVM whole (its default lowering of them is 10-1000x slower).
COMPUTE_HEAVY = frozenset({
    "Attention", "Conv", "ConvInteger", "ConvTranspose", "Einsum", "GRU", "Gemm", "LSTM",
    "MatMul", "MatMulInteger", "MultiHeadAttention", "QLinearConv", "QLinearMatMul", "RNN"})
# In a placement: a node that reads only constants, computed once when the session opens.
FOLDED = "folded"
_KERNEL_DTYPES = {onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE}


@dataclasses.dataclass
class Segment:
    """Consecutive nodes (in the graph's topological order) that run on one backend."""

    on_tvm: bool
    indices: list[int]  # of its nodes in the graph
    nodes: list  # onnx.NodeProto
    inputs: list[str]  # values it reads from graph inputs or earlier segments
    outputs: list[str]  # values later segments or the graph's outputs read


def node_names(graph: onnx.GraphProto) -> list[str]:
    """A unique name per node: its own, or `<op_type>_<index>` where it has none (ONNX
    allows empty and repeated names)."""
    names, seen = [], set()
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if name in seen:
            name = f"{name}_{index}"
        seen.add(name)
        names.append(name)
    return names


def normalized(model: onnx.ModelProto, *, free_widths: bool = False) -> onnx.ModelProto:
    """A copy with Constant nodes turned into initializers (a weight may come from either),
    constant subgraphs computed (weight norm's `g * v / ||v||`, which torch's exporter
    leaves in the graph) and shapes inferred for every value the inference can type.
    Every node keeps its name in `node_names`' terms; `folded_nodes` says which are gone.

    free_widths: a stride-1 Conv whose input width is free becomes a ConvTranspose too
    (for one TVM build for every width, runtime/symbolic_session.py); by default only a
    Conv of static input shape does (where `as_conv_transpose` can check its width)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for node, name in zip(graph.node, node_names(graph)):
        node.name = name  # (the names `placement` reports are the model's)
    kept = []
    for node in graph.node:
        value = [a for a in node.attribute if a.name == "value"]
        if node.op_type == "Constant" and value and not node.domain:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    fold_constants(model)
    model = _inferred(model)
    if _unit_height_to_1d(model):
        model = _inferred(model)
    _convs_as_transposes(model, free_widths)
    return model


def _convs_as_transposes(model: onnx.ModelProto, free_widths: bool = False) -> None:
    """Each stride-1 1-D Conv with constant weights becomes the ConvTranspose that
    computes the same (compile/forward_conv.py), so our kernel runs it. In place; the
    node keeps its name (and its output's type: shapes need no new inference)."""
    from ..compile.forward_conv import as_conv_transpose

    graph = model.graph
    types = value_types(model)
    weights = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        shape = static_shape(types.get(node.input[0])) if node.op_type == "Conv" else None
        found = as_conv_transpose(node, weights, shape[2]) \
            if shape is not None and len(shape) == 3 else None
        if found is None and free_widths and node.op_type == "Conv" and shape is None \
                and _free_width_only(types.get(node.input[0])):
            found = as_conv_transpose(node, weights, None)
        if found is None:
            nodes.append(node)
            continue
        new, tensor = found
        if tensor.name not in weights:
            graph.initializer.append(tensor)
            weights[tensor.name] = tensor
        nodes.append(new)
    del graph.node[:]
    graph.node.extend(nodes)
    read = set().union(*[read_names(node) for node in nodes]) if nodes else set()
    inputs = {v.name for v in graph.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in read | inputs]:
        graph.initializer.remove(tensor)


def _free_width_only(value_type) -> bool:
    """A rank-3 tensor type whose channels (dimension 1) are a fixed number."""
    shape = getattr(getattr(value_type, "tensor_type", None), "shape", None)
    if shape is None or len(shape.dim) != 3:
        return False
    return shape.dim[1].HasField("dim_value") and shape.dim[1].dim_value > 0


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a model the inference rejects still runs on onnxruntime
        return model


# Suffixes of the Squeeze/Unsqueeze that `_unit_height_to_1d` puts around a 1-D node.
TO_1D, TO_2D = "/to_1d", "/to_2d"


def _unit_height_to_1d(model: onnx.ModelProto) -> bool:
    """Rewrite each 2-D ConvTranspose or Conv of unit height (what tf2onnx writes for
    Keras' Conv1DTranspose and Conv1D: input [N, C, 1, W], kernel [., ., 1, K], between an
    Unsqueeze and a Squeeze) as Squeeze -> the 1-D node -> Unsqueeze, which our kernel
    takes. The node keeps its name. True if any was."""
    graph = model.graph
    types = value_types(model)
    weights = {t.name: t for t in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes, changed = [], False
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type in ("Conv", "ConvTranspose") \
            and len(node.input) > 1 else None
        shape = static_shape(types.get(node.input[0])) if weight is not None else None
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if weight is None or len(weight.dims) != 4 or weight.dims[2] != 1 or shape is None \
                or len(shape) != 4 or shape[2] != 1 or not unit_height(attributes):
            nodes.append(node)
            continue
        from onnx import numpy_helper
        flat = numpy_helper.to_array(weight).reshape(list(weight.dims[:2]) + [weight.dims[3]])
        flat_name = f"{weight.name}{TO_1D}"
        if flat_name not in weights:
            graph.initializer.append(numpy_helper.from_array(flat, flat_name))
            weights[flat_name] = graph.initializer[-1]
        axes = f"{node.name}{TO_1D}/axes"
        axis_args = {}
        if opset >= 13:
            graph.initializer.append(numpy_helper.from_array(numpy.array([2], numpy.int64),
                                                             axes))
        else:
            axis_args = {"axes": [2]}
        x1, y1 = f"{node.input[0]}{TO_1D}@{node.name}", f"{node.output[0]}{TO_1D}"
        one_d = {name: value[1:] if isinstance(value, list) and len(value) == 2 else
                 (value[1:2] + value[3:4] if name == "pads" else value)
                 for name, value in attributes.items()}
        nodes.append(onnx.helper.make_node(
            "Squeeze", [node.input[0]] + ([axes] if opset >= 13 else []), [x1],
            name=f"{node.name}{TO_1D}", **axis_args))
        nodes.append(onnx.helper.make_node(
            node.op_type, [x1, flat_name] + list(node.input[2:]), [y1], name=node.name,
            **one_d))
        nodes.append(onnx.helper.make_node(
            "Unsqueeze", [y1] + ([axes] if opset >= 13 else []), [node.output[0]],
            name=f"{node.name}{TO_2D}", **axis_args))
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def unit_height(attributes) -> bool:
    """The height axis of a 2-D ConvTranspose does nothing: kernel 1, stride 1, no pads.
    (auto_pad pads a unit height by nothing: tf2onnx writes SAME_UPPER on Keras'
    'same' Conv1D where the width is free.)"""
    pairs = ("kernel_shape", "strides", "dilations", "output_padding", "output_shape")
    if any(len(attributes.get(name, [1, 1])) != 2 for name in pairs):
        return False
    pads = attributes.get("pads", [0, 0, 0, 0])
    return (len(pads) == 4 and pads[0] == pads[2] == 0
            and attributes.get("kernel_shape", [1, 1])[0] == 1
            and attributes.get("strides", [1, 1])[0] == 1
            and attributes.get("dilations", [1, 1])[0] == 1
            and attributes.get("output_padding", [0, 0])[0] == 0
            and attributes.get("output_shape", [1, 1])[0] == 1
            and _text(attributes.get("auto_pad", b"NOTSET")) in (
                "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def folded_nodes(model: onnx.ModelProto, normalized_model: onnx.ModelProto) -> list[str]:
    """The nodes of `model` that `normalized` computed once (FOLDED in a placement)."""
    kept = {node.name for node in normalized_model.graph.node}
    return [name for name in node_names(model.graph) if name not in kept]


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    graph = model.graph
    found = {v.name: v.type for v in list(graph.value_info) + list(graph.input)
             + list(graph.output)}
    for tensor in graph.initializer:
        found[tensor.name] = onnx.helper.make_tensor_type_proto(tensor.data_type,
                                                                tensor.dims)
    return found


def static_shape(type_proto: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if type_proto is None or not type_proto.tensor_type.HasField("shape"):
        return None
    dims = type_proto.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def kernel_refusal(node: onnx.NodeProto, model: onnx.ModelProto, types=None) -> str | None:
    """Why our kernel cannot run this node, in words; None where it can.

    It runs a 1-D ConvTranspose of group 1 whose weights (and bias) are constants, on a
    float16/32/64 tensor with a static shape (a symbolic time axis is issue 30's)."""
    if node.op_type == "Conv" and node.domain in ("", "ai.onnx"):
        return ("our kernel takes a Conv only when it is 1-D, of stride 1 and group 1, with "
                "constant weights and a static input shape")
    if node.op_type != "ConvTranspose" or node.domain not in ("", "ai.onnx"):
        return f"{node.op_type} has no scheduled TVM kernel"
    types = value_types(model) if types is None else types
    constants = {t.name: t for t in model.graph.initializer}
    weight = constants.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None:
        return f"its weights {node.input[1]!r} are not a constant"
    if len(weight.dims) != 3:
        return f"it is {len(weight.dims) - 2}-D (weights of shape {list(weight.dims)})"
    if len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
        return f"its bias {node.input[2]!r} is not a constant"
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("group", 1) != 1:
        return f"group={attributes['group']} (the kernel takes group 1)"
    if weight.data_type not in _KERNEL_DTYPES:
        return f"dtype {onnx.TensorProto.DataType.Name(weight.data_type)}"
    shape = static_shape(types.get(node.input[0]))
    if shape is None:
        return f"its input {node.input[0]!r} has no static shape"
    if len(shape) != 3 or 0 in shape:
        return f"its input has shape {list(shape)}"
    return None


def layout_transposes(model: onnx.ModelProto, convs: set[int]) -> set[int]:
    """Indices of the `[0, 2, 1]` Transposes that feed or read only one of `convs` (our
    NWC graph and tf2onnx's wrap each ConvTranspose in them): they go to TVM with it, where
    the lowering folds them into the kernel's indexing); and the Squeeze/Unsqueeze that
    `normalized` put around a unit-height 2-D one."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    graph_outputs = {o.name for o in model.graph.output}
    producer = {out: index for index, node in enumerate(nodes) for out in node.output}

    def swap(index):
        node = nodes[index]
        perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
        return node.op_type == "Transpose" and perm == [[0, 2, 1]]

    found = {index for index, node in enumerate(nodes) for conv in convs
             if node.name in (nodes[conv].name + TO_1D, nodes[conv].name + TO_2D)}
    for conv in convs:
        before = producer.get(nodes[conv].input[0])
        if before is not None and swap(before) \
                and consumers.get(nodes[before].output[0]) == [conv] \
                and nodes[before].output[0] not in graph_outputs:
            found.add(before)
        after = consumers.get(nodes[conv].output[0], [])
        if len(after) == 1 and swap(after[0]) and nodes[conv].output[0] not in graph_outputs:
            found.add(after[0])
    return found


# Ops that may join a TVM segment next to our kernel: TVM's default CPU lowering runs them
# about as fast as onnxruntime (LLVM vectorizes their loops: LeakyRelu + Add on 128 x 3200
# floats 0.096 ms against onnxruntime's 0.088, tools/models/elementwise_ops.py, Zen 4,
# 2026-12-06), and exactly, Tanh and
# Exp through TVM's FastMathTransform (compile/build.py: abs error 3e-7, onnxruntime's
# own), Elu as `tvm_ready` rewrites it. Each one kept on TVM saves a round trip to
# onnxruntime and back (EnCodec's 14 Elu/Slice/Pad calls cost 11.1 ms against ~6.3 ms
# inside one onnxruntime session, docs/design/placement.md).
TVM_ELEMENTWISE = frozenset({
    "Abs", "Add", "Clip", "Concat", "Div", "Elu", "Identity", "LeakyRelu", "Mul", "Neg",
    "Pad", "Relu", "Sigmoid", "Slice", "Split", "Squeeze", "Sub", "Tanh", "Transpose",
    "Unsqueeze"})
# Inputs (by position) that TVM's importer needs as constants.
_CONSTANT_INPUTS = {"Pad": (1, 2, 3), "Slice": (1, 2, 3, 4), "Split": (1,), "Squeeze": (1,),
                    "Unsqueeze": (1,), "Clip": (1, 2)}


def joined_elementwise(model: onnx.ModelProto, on_tvm: set[int], types=None) -> set[int]:
    """Indices of the elementwise nodes (TVM_ELEMENTWISE) that join `on_tvm`, to a fixed
    point: a node that reads a value made on TVM, or whose every output only nodes on TVM
    read. So the activations and residual Adds between kernels, and a Pad before the
    first, run inside their TVM segment, and onnxruntime keeps what only it runs and what
    sits between its own nodes. Float tensors of static shapes only; Pad, Slice and the
    like with constant pads, starts and axes (TVM's importer needs them)."""
    types = value_types(model) if types is None else types
    nodes = list(model.graph.node)
    constants = {t.name for t in model.graph.initializer}
    producer = {out: index for index, node in enumerate(nodes) for out in node.output if out}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in read_names(node):
            consumers.setdefault(name, []).append(index)

    def eligible(node):
        if node.op_type not in TVM_ELEMENTWISE or node.domain not in ("", "ai.onnx"):
            return False
        fixed = _CONSTANT_INPUTS.get(node.op_type, ())
        if any(i < len(node.input) and node.input[i] and node.input[i] not in constants
               for i in fixed):
            return False
        values = [n for n in list(node.input) + list(node.output) if n and n not in constants]
        return all(static_shape(types.get(n)) is not None and
                   types[n].tensor_type.elem_type in _KERNEL_DTYPES for n in values)

    joined = set(on_tvm)
    candidates = [i for i, node in enumerate(nodes) if i not in joined and eligible(node)]
    changed = True
    while changed:
        changed = False
        for index in candidates:
            if index in joined:
                continue
            node = nodes[index]
            reads = [n for n in node.input if n and n not in constants]
            made = [n for n in node.output if n]
            after_tvm = any(producer.get(n) in joined for n in reads)
            before_tvm = all(consumers.get(n) and all(c in joined for c in consumers[n])
                             for n in made)
            if after_tvm or before_tvm:
                joined.add(index)
                changed = True
    return joined - set(on_tvm)


def tvm_ready(model: onnx.ModelProto) -> onnx.ModelProto:
    """A segment's model as TVM should import it:

    - each Elu written as `Where(IsNaN(x), x, Where(x > 0, x, alpha * (Exp(x) - 1)))`.
      TVM 0.27's importer writes Elu as `-alpha * relu(1 - exp(x)) + relu(x)`, which
      gives 0 for a NaN input (LLVM's max drops NaN) where onnxruntime and TensorFlow
      give NaN;
    - each Sigmoid as `Where(IsNaN(x), x, 1 / (1 + Exp(-x)))`: TVM lowers its sigmoid to
      a scalar libm exp per element (Demucs' GLU on 128 x 15020 floats: 1.23 ms a call,
      2026-12-06), the Exp here goes through FastMathTransform's vectorized form
      (compile/build.py), whose clamp of its input would turn NaN into a number.
    """
    if not any(node.op_type in ("Elu", "Sigmoid") for node in model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    make = onnx.helper.make_node
    types = value_types(onnx.shape_inference.infer_shapes(model))
    kept = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in ("Elu", "Sigmoid"):
            kept.append(node)
            continue
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
        x, y = node.input[0], node.output[0]
        tag = f"{node.name or node.op_type}_{index}"
        numpy_dtype = onnx.helper.tensor_dtype_to_np_dtype(types[x].tensor_type.elem_type)
        for name, value in ((f"{tag}_zero", 0.0), (f"{tag}_one", 1.0), (f"{tag}_alpha", alpha)):
            model.graph.initializer.append(
                onnx.numpy_helper.from_array(numpy.array(value, dtype=numpy_dtype), name))
        if node.op_type == "Elu":
            kept += [
                make("Exp", [x], [f"{tag}_exp"], name=f"{tag}_exp"),
                make("Sub", [f"{tag}_exp", f"{tag}_one"], [f"{tag}_em1"], name=f"{tag}_em1"),
                make("Mul", [f"{tag}_em1", f"{tag}_alpha"], [f"{tag}_neg"],
                     name=f"{tag}_neg"),
                make("Greater", [x, f"{tag}_zero"], [f"{tag}_pos"], name=f"{tag}_pos"),
                make("Where", [f"{tag}_pos", x, f"{tag}_neg"], [f"{tag}_value"],
                     name=f"{tag}_value"),
            ]
        else:
            kept += [
                make("Neg", [x], [f"{tag}_minus"], name=f"{tag}_minus"),
                make("Exp", [f"{tag}_minus"], [f"{tag}_exp"], name=f"{tag}_exp"),
                make("Add", [f"{tag}_exp", f"{tag}_one"], [f"{tag}_ep1"], name=f"{tag}_ep1"),
                make("Div", [f"{tag}_one", f"{tag}_ep1"], [f"{tag}_value"],
                     name=f"{tag}_value"),
            ]
        kept += [
            make("IsNaN", [x], [f"{tag}_nan"], name=f"{tag}_nan"),
            make("Where", [f"{tag}_nan", x, f"{tag}_value"], [y], name=node.name or tag),
        ]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def segments(model: onnx.ModelProto, on_tvm: set[int]) -> list[Segment]:
    """The graph's nodes cut into runs of one backend, in topological order, each with
    the values it reads from before and the values read after it."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    runs: list[tuple[bool, list[int]]] = []
    for index in range(len(graph.node)):
        tvm = index in on_tvm
        if runs and runs[-1][0] == tvm:
            runs[-1][1].append(index)
        else:
            runs.append((tvm, [index]))
    reads = [set().union(*[read_names(graph.node[i]) for i in run]) for _, run in runs]
    graph_outputs = [o.name for o in graph.output]
    result = []
    for position, (tvm, run) in enumerate(runs):
        made = [out for i in run for out in graph.node[i].output if out]
        made_set = set(made)
        later = set().union(*reads[position + 1:]) | set(graph_outputs)
        inputs = sorted(reads[position] - made_set - constants)
        outputs = [name for name in dict.fromkeys(made) if name in later]
        result.append(Segment(tvm, run, [graph.node[i] for i in run], inputs, outputs))
    return result


def read_names(node: onnx.NodeProto) -> set[str]:
    """Every value a node reads, including those its subgraphs (If, Loop, Scan) read from
    the enclosing scope."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        graphs = list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else [])
        for sub in graphs:
            inner = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            for sub_node in sub.node:
                inner |= set(sub_node.output)
            for sub_node in sub.node:
                names |= read_names(sub_node) - inner
    return names


def segment_model(model: onnx.ModelProto, segment: Segment, types) -> onnx.ModelProto:
    """A model of one segment alone: its nodes, the initializers they read, its inputs and
    outputs typed as shape inference typed them."""
    graph = model.graph
    read = set().union(*[read_names(node) for node in segment.nodes])
    initializers = [t for t in graph.initializer if t.name in read]

    def value(name):
        type_proto = types.get(name)
        if type_proto is None:
            raise ValueError(f"the type of {name!r} is unknown")  # caught: stays on onnxruntime
        info = onnx.ValueInfoProto()
        info.name = name
        info.type.CopyFrom(type_proto)
        return info

    sub = onnx.helper.make_graph(list(segment.nodes), f"{graph.name}_part",
                                 [value(n) for n in segment.inputs],
                                 [value(n) for n in segment.outputs], initializers)
    result = onnx.helper.make_model(sub, opset_imports=list(model.opset_import),
                                    ir_version=model.ir_version)
    result.functions.extend(model.functions)
    from ..compile.manifest import SPECIALIZED_KEY  # the segment's manifest records it
    result.metadata_props.extend(p for p in model.metadata_props if p.key == SPECIALIZED_KEY)
    return result



# Never folded: their value is not a function of their inputs.
_NOT_FOLDED = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform",
                         "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})


def fold_constants(model: onnx.ModelProto) -> bool:
    """Replace the nodes that read only constants by the values they compute, in place
    (onnx's reference evaluator computes them: no runtime needed); True if any were. A
    model it cannot evaluate is left as it is: onnxruntime folds such nodes itself, and
    our kernel then just does not take the ConvTranspose they feed."""
    graph = model.graph
    known = {t.name for t in graph.initializer}
    folded, kept = [], []
    for node in graph.node:
        if node.input and node.domain in ("", "ai.onnx") and node.op_type not in _NOT_FOLDED \
                and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                            for a in node.attribute) \
                and all(not name or name in known for name in node.input):
            folded.append(node)
            known.update(node.output)
        else:
            kept.append(node)
    if not folded:
        return False
    read = set().union(*[read_names(node) for node in kept]) | {o.name for o in graph.output}
    wanted = [name for node in folded for name in node.output if name in read]
    if not wanted:
        return False
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    constants = onnx.helper.make_graph(
        folded, "constants", [], [onnx.helper.make_empty_tensor_value_info(name)
                                  for name in wanted], list(graph.initializer))
    try:
        evaluator = ReferenceEvaluator(onnx.helper.make_model(
            constants, opset_imports=list(model.opset_import), ir_version=model.ir_version))
        values = evaluator.run(wanted, {})
    except Exception:
        return False
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(numpy.asarray(value), name)
                             for name, value in zip(wanted, values))
    used = set().union(*[read_names(node) for node in kept]) | {o.name for o in graph.output}
    inputs = {v.name for v in graph.input}
    unused = [t for t in graph.initializer if t.name not in used and t.name not in inputs]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return True
