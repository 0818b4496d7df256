"""NWC inside a TVM segment: the tensors between two ConvTranspose stay NWC.

Models arrive NCW (PyTorch's layout), and our kernel is 25-30% faster NWC for stride-1
layers (the NCW store scatters a vector of channels over 16 output rows). The lowering
(compile/lowering.py) runs `Transpose([0, 2, 1]) -> ConvTranspose -> Transpose([0, 2, 1])`
as one NWC kernel that reads and writes NWC directly. So `nwc_inside` writes each 1-D
ConvTranspose in that wrapped form, T . conv . T on NWC data, and moves the transposes
that are left through the layout-agnostic ops between the convs (activations, residual
Adds, bias-like constants, Pad and Slice on the time axis, GLU's Split and Concat), where
two of them meet and cancel. What remains: one transpose where a segment's input or
output is NCW (or an op that cares about the layout, such as Reshape or LSTM, reads a
tensor), and the two around each ConvTranspose that the lowering folds into the kernel.

It works as one pass over the nodes in topological order, which comes to the same graph
as sinking and cancelling: each value is held in the model's layout, in NWC (its axes 1
and 2 swapped), or both; an op runs in the layout in which fewer of its inputs need a
transpose (on a tie, NWC where an input was made NWC), and a value gets a Transpose only
where some op reads it in the layout it does not have yet.

It pays only where TVM schedules a segment's elementwise ops and Transposes
(compile/elementwise.py: unscheduled, they were 7-10x slower with 16 channels innermost
than with the time axis innermost) and the segment holds several convolutions:
split_session.py applies it to segments of two or more (docs/design/placement.md, "NWC
inside a TVM segment").

Pure ONNX and numpy: nothing here imports TVM or onnxruntime.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["nwc_inside"]

# A value as the model holds it, and with its channel axis (1) and last axis swapped:
# NWC for a rank-3 NCW tensor, [N, W, 1, C] for the [N, C, 1, W] between tf2onnx's
# Unsqueeze and Squeeze.
MODEL, SWAPPED = 0, 1
_DOMAINS = ("", "ai.onnx")
# Elementwise ops of one tensor: any layout computes the same. (Clip's min and max are
# scalars.)
_UNARY = frozenset({
    "Abs", "Ceil", "Celu", "Clip", "Cos", "Elu", "Erf", "Exp", "Floor", "Gelu",
    "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish",
    "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin",
    "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu", "Cast"})
# Elementwise ops with numpy broadcasting.
_BROADCAST = frozenset({
    "Add", "And", "Div", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Max",
    "Mean", "Min", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub", "Sum", "Where", "Xor"})


def nwc_inside(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing the same function, in which every rank-3 ConvTranspose
    of group 1 with constant weights sits between two `[0, 2, 1]` Transposes (the form
    the lowering runs as an NWC kernel) and the tensors between such convs stay NWC.

    The graph's inputs and outputs keep their names, shapes and layout. Every node the
    rewrite keeps keeps its name (placement maps node names to backends); new nodes get
    fresh names. A ConvTranspose's bias becomes an Add after its output Transpose (TVM's
    importer writes the bias as an add after the conv, which would hide the conv from the
    lowering's NWC pattern). `[0, 2, 1]` Transposes of the model that cancel go away. The
    rewrite moves no arithmetic: it only transposes values, so results are bitwise equal
    on a backend that computes each node the same way in either layout.

    Expects constants as initializers (`placement.normalized`); a model with no such
    ConvTranspose comes back unchanged.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    typed = _inferred(model)
    rewrite = _Rewrite(typed)
    if not any(rewrite.takes(node) for node in model.graph.node):
        return model
    nodes = rewrite.run()
    graph = model.graph
    read_before = {name for node in graph.node for name in _read_names(node)}
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(rewrite.new_constants)
    read = {name for node in nodes for name in _read_names(node)}
    read |= {o.name for o in graph.output} | {i.name for i in graph.input}
    for tensor in [t for t in graph.initializer if t.name in read_before - read]:
        graph.initializer.remove(tensor)
    present = read | {out for node in nodes for out in node.output}
    kept = [v for v in graph.value_info if v.name in present]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return _inferred(model)


class _Rewrite:
    """The state of one pass: where each value is held, in which layouts, under which
    names. `run` returns the new nodes; `new_constants` the initializers it added."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.graph = graph
        self.opset = next((o.version for o in model.opset_import if o.domain in _DOMAINS), 0)
        self.constants = {t.name: t for t in graph.initializer}
        self.types = {v.name: v.type for v in list(graph.value_info) + list(graph.input)
                      + list(graph.output)}
        # Names in use: of values, and (a namespace of their own) of nodes.
        self.taken = {"value": {o for n in graph.node for o in n.output} | set(self.types)
                      | set(self.constants) | {i for n in graph.node for i in n.input},
                      "node": {n.name for n in graph.node}}
        # value -> (base, flipped): the value is its base, swapped if flipped. Only the
        # model's own [0, 2, 1] Transposes make a value that is not its own base.
        self.origin: dict[str, tuple[str, int]] = {}
        # base -> [name holding it in the model's layout, name holding it swapped]
        self.slots: dict[str, list] = {}
        self.first: dict[str, int] = {}  # base -> the layout its producer made
        # (base, SWAPPED) -> (value name, node name) that a Transpose making it should
        # take: a graph output's, or one of the model's own Transposes'.
        self.preferred: dict[tuple[str, int], tuple[str, str | None]] = {}
        self.transposed: set[str] = set()  # values made by a Transpose in the new graph
        self.swapped_constants: dict[str, str] = {}
        self.new_constants: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        for name in [i.name for i in graph.input] + list(self.constants):
            self._hold(name, MODEL, name)
        producers = {}
        for node in graph.node:
            for out in node.output:
                producers[out] = node
            if _is_swap(node):
                base, flipped = self._origin(node.input[0])
                self.origin[node.output[0]] = (base, 1 - flipped)
                if flipped == 0:
                    self.preferred.setdefault((base, SWAPPED), (node.output[0], node.name))
        for output in graph.output:
            base, flipped = self._origin(output.name)
            if flipped:
                producer = producers.get(output.name)
                self.preferred[(base, SWAPPED)] = (
                    output.name, producer.name if producer is not None and _is_swap(producer)
                    else None)

    # -- the pass --------------------------------------------------------------------

    def run(self) -> list[onnx.NodeProto]:
        for node in self.graph.node:
            if _is_swap(node):
                continue  # an alias of its input; made where something reads it
            if self.takes(node):
                self._conv_transpose(node)
                continue
            plan = self._swapped_plan(node)
            if plan is not None and self._runs_swapped(node, plan[0]):
                self._emit_swapped(node, *plan)
            else:
                self._emit_as_is(node)
        for output in self.graph.output:
            self._named(output.name)
        return self.nodes

    def takes(self, node: onnx.NodeProto) -> bool:
        """A ConvTranspose the lowering can run as an NWC kernel once wrapped."""
        if node.op_type != "ConvTranspose" or node.domain not in _DOMAINS \
                or len(node.input) < 2:
            return False
        weight = self.constants.get(node.input[1])
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        return weight is not None and len(weight.dims) == 3 and group == 1 \
            and self._rank(node.input[0]) == 3

    def _conv_transpose(self, node: onnx.NodeProto) -> None:
        data = self.need(node.input[0], SWAPPED)
        held = self.have(node.input[0], MODEL)
        if held is None:
            into = self.need(node.input[0], MODEL)  # a Transpose of `data`, by construction
        elif held in self.transposed:
            into = held  # a Transpose of the swapped value already: the lowering reads past it
        else:
            into = self._transpose(data, self._fresh(f"{node.name}/input_ncw"),
                                   self._fresh(f"{node.name}/input_ncw", "node"))
        output = node.output[0]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        raw = self._fresh(f"{output}/ncw")
        conv = onnx.NodeProto()
        conv.CopyFrom(node)
        del conv.input[:], conv.output[:]
        conv.input.extend([into, node.input[1]])
        conv.output.append(raw)
        self.nodes.append(conv)
        name, node_name = self.preferred.get((output, SWAPPED), (None, None))
        final = name or self._fresh(f"{output}/nwc")
        if bias is None:
            self._transpose(raw, final,
                            node_name or self._fresh(f"{node.name}/output_nwc", "node"))
        else:
            # [N, W, C] + bias [C]: the bias runs along the last axis.
            unbiased = self._transpose(raw, self._fresh(f"{output}/nwc_without_bias"),
                                       self._fresh(f"{node.name}/output_nwc", "node"))
            self.nodes.append(helper.make_node("Add", [unbiased, bias], [final],
                                               name=self._fresh(f"{node.name}/bias", "node")))
        self._hold(output, SWAPPED, final)

    def _runs_swapped(self, node: onnx.NodeProto, data: list[int]) -> bool:
        """Run in NWC where fewer of the data inputs need a transpose so, and on a tie
        where one of them was made NWC (a transpose would sink through it)."""
        names = [node.input[i] for i in data if node.input[i] not in self.constants]
        to_swap = sum(self.have(name, SWAPPED) is None for name in names)
        to_model = sum(self.have(name, MODEL) is None for name in names)
        if to_swap != to_model:
            return to_swap < to_model
        return any(self._first_layout(name) == SWAPPED for name in names)

    def _emit_swapped(self, node, data, inputs, attributes) -> None:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        inputs = _resolved(inputs)
        for index in data:
            inputs[index] = self.need(node.input[index], SWAPPED)
        del new.input[:], new.output[:]
        new.input.extend(inputs)
        outputs = []
        for output in node.output:
            if not output:
                outputs.append(output)
                continue
            name = self.preferred.get((output, SWAPPED), (None,))[0] \
                or self._fresh(f"{output}/nwc")
            outputs.append(name)
            self._hold(output, SWAPPED, name)
        new.output.extend(outputs)
        kept = [a for a in new.attribute if a.name not in attributes]
        del new.attribute[:]
        new.attribute.extend(kept + [helper.make_attribute(name, value)
                                     for name, value in sorted(attributes.items())])
        self.nodes.append(new)

    def _emit_as_is(self, node: onnx.NodeProto) -> None:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(self.need(name, MODEL) for name in node.input)
        inner = _read_names(node) - {name for name in node.input if name}
        for name in sorted(inner):  # read by a subgraph, by name
            self._named(name)
        self.nodes.append(new)
        for output in node.output:
            if output:
                self._hold(output, MODEL, output)

    # -- which ops run NWC, and how -------------------------------------------------

    def _swapped_plan(self, node: onnx.NodeProto):
        """(positions of the inputs read NWC, the inputs list with constants already in
        their NWC form, attributes to change) for running `node` on NWC data; None where
        the op depends on the layout (or this pass does not know how it does)."""
        if node.domain not in _DOMAINS or not node.input or \
                not all(self._known(name) for name in node.input if name) or \
                any(self._rank(name) is None for name in node.output if name):
            return None
        op = node.op_type
        inputs = list(node.input)
        if op in _BROADCAST:
            return self._broadcast_plan(node, inputs)
        rank = self._rank(node.input[0])
        if rank is None or rank < 3:
            return None
        if op in _UNARY:
            return [0], inputs, {}
        if op == "Concat":
            if not all(self._rank(name) == rank for name in node.input):
                return None
            return list(range(len(inputs))), inputs, {"axis": self._axis(node, rank)}
        if op == "Split":
            return [0], inputs, {"axis": self._axis(node, rank)}
        if op == "Pad":
            return self._pad_plan(node, inputs, rank)
        if op == "Slice":
            return self._slice_plan(node, inputs, rank)
        if op in ("Squeeze", "Unsqueeze"):
            return self._squeeze_plan(node, inputs, rank)
        return None

    def _broadcast_plan(self, node, inputs):
        names = [name for name in node.input if name]
        rank = max((self._rank(name) or 0 for name in names), default=0)
        if rank < 3 or any(self._rank(name) is None for name in names):
            return None
        data = []
        for index, name in enumerate(node.input):
            if not name or name in self.constants:
                continue
            if self._rank(name) == rank:
                data.append(index)
            elif self._size(name) != 1:  # [C] or [W] computed at run time: layout-bound
                return None
        if not data:
            return None
        for index, name in enumerate(node.input):
            if name in self.constants:
                inputs[index] = _Later(lambda name=name: self._swapped_constant(name, rank))
        return data, inputs, {}

    def _pad_plan(self, node, inputs, rank):
        perm = _swap(rank)
        if self.opset < 11:
            pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), None)
            return ([0], inputs, {"pads": _swapped_pads(pads, perm)}) \
                if pads and len(pads) == 2 * rank else None
        pads = self._constant_array(node.input[1]) if len(node.input) > 1 else None
        if pads is None:
            return None
        pads = pads.reshape(-1).tolist()
        if len(node.input) > 3 and node.input[3]:  # axes (opset 18)
            axes = self._constant_array(node.input[3])
            if axes is None or 2 * axes.size != len(pads):
                return None
            # Written for every axis, without `axes`: onnxruntime 1.32's transpose
            # optimizer, pushing a Transpose into the Pad, permutes its pads as if they
            # covered every axis (measured: a Gather out of bounds at run time).
            full = [0] * (2 * rank)
            for index, axis in enumerate(axes.reshape(-1).tolist()):
                full[axis % rank] = pads[index]
                full[rank + axis % rank] = pads[axes.size + index]
            pads = full
            del inputs[3:]
            while inputs[-1] == "":
                inputs.pop()
        if len(pads) != 2 * rank:
            return None
        inputs[1] = _Later(lambda: self._new_constant(
            np.array(_swapped_pads(pads, perm), np.int64), node.input[1]))
        return [0], inputs, {}

    def _squeeze_plan(self, node, inputs, rank):
        """A Squeeze or Unsqueeze of middle axes only (tf2onnx's unit height, axis 2):
        the channel axis and the last one stay where they are, so do the axes, NWC."""
        if self.opset >= 13:
            axes = self._constant_array(node.input[1]) if len(node.input) > 1 else None
            axes = None if axes is None else axes.reshape(-1).tolist()
        else:
            axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if not axes:  # Squeeze without axes: every unit axis, the channel's too maybe
            return None
        out_rank = rank + len(axes) if node.op_type == "Unsqueeze" else rank - len(axes)
        inner = out_rank if node.op_type == "Unsqueeze" else rank
        if out_rank < 3 or not all(2 <= a % inner <= inner - 2 for a in axes):
            return None
        return [0], inputs, {}

    def _slice_plan(self, node, inputs, rank):
        perm = _swap(rank)
        if self.opset < 10:
            attributes = {a.name: list(a.ints) for a in node.attribute}
            axes = attributes.get("axes", list(range(len(attributes.get("starts", [])))))
            return [0], inputs, {"axes": [perm[a % rank] for a in axes]}
        if len(node.input) > 3 and node.input[3]:
            axes = self._constant_array(node.input[3])
            if axes is None:
                return None
            dtype, name = axes.dtype, node.input[3]
            axes = axes.tolist()
        else:  # absent: the first len(starts) axes
            starts = self.constants.get(node.input[1])
            count = int(np.prod(starts.dims)) if starts is not None else \
                self._static_length(node.input[1])
            if count is None:
                return None
            dtype = np.int32 if self._elem_type(node.input[1]) == onnx.TensorProto.INT32 \
                else np.int64
            axes, name = list(range(count)), f"{node.name}/axes"
        inputs.extend([""] * (4 - len(inputs)))
        inputs[3] = _Later(lambda: self._new_constant(
            np.array([perm[a % rank] for a in axes], dtype), name))
        return [0], inputs, {}

    def _axis(self, node, rank: int) -> int:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        return _swap(rank)[axis % rank]

    # -- values, layouts and names ----------------------------------------------------

    def _origin(self, name: str) -> tuple[str, int]:
        return self.origin.get(name, (name, 0))

    def _hold(self, base: str, layout: int, name: str) -> None:
        self.slots.setdefault(base, [None, None])[layout] = name
        self.first.setdefault(base, layout)

    def _first_layout(self, name: str) -> int:
        base, flipped = self._origin(name)
        return self.first.get(base, MODEL) ^ flipped

    def _known(self, name: str) -> bool:
        return self._origin(name)[0] in self.slots

    def have(self, name: str, layout: int) -> str | None:
        """The name holding value `name` in `layout` (relative to the model's), if any."""
        base, flipped = self._origin(name)
        slot = self.slots.get(base)
        return slot[flipped ^ layout] if slot else None

    def need(self, name: str, layout: int) -> str:
        """The name holding `name` in `layout`, made by a Transpose where it is not held."""
        if not name:
            return name
        held = self.have(name, layout)
        if held is not None:
            return held
        base, flipped = self._origin(name)
        want = flipped ^ layout
        slot = self.slots.get(base)
        if slot is None:  # not made by this graph's nodes (read from an outer scope)
            return name
        if want == MODEL:
            target, node_name = base, None
        else:
            target, node_name = self.preferred.get((base, SWAPPED), (None, None))
            target = target or self._fresh(f"{base}/nwc")
        rank = self._rank(base) or 3  # (untyped: a ConvTranspose's output, rank 3)
        if base in self.constants:
            array = numpy_helper.to_array(self.constants[base])
            self.new_constants.append(numpy_helper.from_array(
                np.ascontiguousarray(array.transpose(_swap(rank))), target))
        else:
            suffix = "to_nwc" if want == SWAPPED else "to_ncw"
            node_name = node_name or self._fresh(f"{base}/{suffix}", "node")
            self._transpose(slot[1 - want], target, node_name, rank)
        self._hold(base, want, target)
        return target

    def _named(self, name: str) -> None:
        """A value called `name` holding it in the model's layout (a graph output, or a
        value a subgraph reads by name)."""
        held = self.need(name, MODEL)
        if held != name:
            self.nodes.append(helper.make_node("Identity", [held], [name],
                                               name=self._fresh(f"{name}/identity", "node")))

    def _transpose(self, source: str, target: str, node_name: str, rank: int = 3) -> str:
        self.nodes.append(helper.make_node("Transpose", [source], [target], name=node_name,
                                           perm=_swap(rank)))
        self.transposed.add(target)
        return target

    def _swapped_constant(self, name: str, rank: int) -> str:
        """The constant `name` as it broadcasts against swapped data of `rank`: its shape
        padded with leading 1s, the channel and last axes swapped (a scalar as it is)."""
        key = (name, rank)
        if key not in self.swapped_constants:
            array = numpy_helper.to_array(self.constants[name])
            array = array.reshape((1,) * (rank - array.ndim) + array.shape)
            if array.shape[1] == array.shape[-1] == 1:
                self.swapped_constants[key] = name
            else:
                self.swapped_constants[key] = self._new_constant(
                    np.ascontiguousarray(array.transpose(_swap(rank))), name)
        return self.swapped_constants[key]

    def _new_constant(self, array: np.ndarray, like: str) -> str:
        name = self._fresh(f"{like}/nwc")
        self.new_constants.append(numpy_helper.from_array(array, name))
        return name

    def _fresh(self, base: str, kind: str = "value") -> str:
        taken = self.taken[kind]
        name, count = base, 0
        while name in taken:
            count += 1
            name = f"{base}_{count}"
        taken.add(name)
        return name

    def _constant_array(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def _type(self, name: str):
        if name in self.constants:
            tensor = self.constants[name]
            return helper.make_tensor_type_proto(tensor.data_type, tensor.dims)
        base, _ = self._origin(name)
        return self.types.get(name) or self.types.get(base)

    def _rank(self, name: str) -> int | None:
        type_proto = self._type(name)
        if type_proto is None or not type_proto.tensor_type.HasField("shape"):
            return None
        return len(type_proto.tensor_type.shape.dim)

    def _dims(self, name: str) -> list[int] | None:
        type_proto = self._type(name)
        if type_proto is None or not type_proto.tensor_type.HasField("shape"):
            return None
        dims = type_proto.tensor_type.shape.dim
        return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) \
            else None

    def _size(self, name: str) -> int | None:
        dims = self._dims(name)
        return None if dims is None else int(np.prod(dims, dtype=np.int64))

    def _static_length(self, name: str) -> int | None:
        dims = self._dims(name)
        return dims[0] if dims is not None and len(dims) == 1 else None

    def _elem_type(self, name: str) -> int:
        type_proto = self._type(name)
        return type_proto.tensor_type.elem_type if type_proto is not None else 0


class _Later:
    """An input made only once the op is known to run NWC (a constant in its NWC form)."""

    def __init__(self, make):
        self.make = make


def _resolved(inputs: list) -> list[str]:
    return [item.make() if isinstance(item, _Later) else item for item in inputs]


def _swap(rank: int) -> list[int]:
    """The permutation that swaps the channel axis (1) and the last one: [0, 2, 1] for
    rank 3, [0, 3, 2, 1] for rank 4. Its own inverse: it also says where an axis goes."""
    return [0, rank - 1] + list(range(2, rank - 1)) + [1]


def _swapped_pads(pads: list[int], perm: list[int]) -> list[int]:
    """ONNX pads [begins of every axis, ends of every axis] with the axes permuted."""
    rank = len(perm)
    return [pads[a] for a in perm] + [pads[rank + a] for a in perm]


def _is_swap(node: onnx.NodeProto) -> bool:
    """A rank-3 Transpose([0, 2, 1]): the model's own layout Transposes (tf2onnx's around
    each ConvTranspose, or a graph's NWC -> NCW at its input)."""
    perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
    return node.op_type == "Transpose" and node.domain in _DOMAINS and perm == [[0, 2, 1]]


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # without types, fewer ops run NWC; the rewrite stays correct
        return model


def _read_names(node: onnx.NodeProto) -> set[str]:
    # (placement's: what a node reads, its subgraphs' reads from this scope included)
    from .placement import read_names
    return read_names(node)
