"""NWC inside a TVM segment (runtime/nwc_inside.py): the rewritten model computes the same
function, bit for bit (the rewrite moves no arithmetic), keeps its inputs, outputs and
node names, wraps every ConvTranspose in the form the lowering runs as an NWC kernel, and
transposes only where a segment's input or output, or a layout-bound op, needs NCW."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from conv1d_transpose import architectures
from conv1d_transpose.runtime.nwc_inside import nwc_inside
from conv1d_transpose.runtime.placement import normalized

RNG = np.random.default_rng(30)
C, W = 4, 6  # channels and width of the hand-made graphs' input


# -- helpers ------------------------------------------------------------------------------

def constant(name, array, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(array, dtype), name)


def weights(name, *shape):
    return constant(name, RNG.standard_normal(shape) * 0.3)


def tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def model_of(nodes, initializers, inputs=None, outputs=("y",), opset=17):
    inputs = inputs or [tensor("x", [1, C, W])]
    graph = helper.make_graph(nodes, "m", inputs, [tensor(o, None) for o in outputs],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # types the outputs
    onnx.checker.check_model(model)
    return model


def conv_transpose(x, y, name, cin=C, cout=C, kernel=3, stride=1, bias=True):
    """A ConvTranspose node and its initializers ('same' width at stride 1)."""
    pads = [(kernel - stride) // 2, kernel - stride - (kernel - stride) // 2]
    inputs = [x, f"{name}.w"] + ([f"{name}.b"] if bias else [])
    node = helper.make_node("ConvTranspose", inputs, [y], name=name, strides=[stride],
                            kernel_shape=[kernel], pads=pads)
    inits = [weights(f"{name}.w", cin, cout, kernel)]
    if bias:
        inits.append(weights(f"{name}.b", cout))
    return node, inits


def run(model, feeds, optimized):
    options = onnxruntime.SessionOptions()
    if not optimized:  # each node as the graph writes it
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_feeds(model):
    return {i.name: RNG.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in model.graph.input}


def rewritten_and_checked(model):
    """`nwc_inside(model)`, after checking the contract every rewrite keeps."""
    result = nwc_inside(model)
    onnx.checker.check_model(result, full_check=True)
    onnx.shape_inference.infer_shapes(result, check_type=True, strict_mode=True)
    assert [(i.name, i.type) for i in result.graph.input] == \
        [(i.name, i.type) for i in model.graph.input]
    assert [o.name for o in result.graph.output] == [o.name for o in model.graph.output]
    kept = {node.name for node in result.graph.node}
    assert [node.name for node in model.graph.node
            if node.name not in kept and not is_swap(node)] == []
    names = [node.name for node in result.graph.node]
    assert len(names) == len(set(names))
    feeds = random_feeds(model)
    expected, got = run(model, feeds, False), run(result, feeds, False)
    for want, have in zip(expected, got):
        assert want.shape == have.shape
        np.testing.assert_array_equal(have, want)  # no arithmetic moved: bitwise
    for want, have in zip(run(model, feeds, True), run(result, feeds, True)):
        np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-6)
    return result


def is_swap(node):
    return node.op_type == "Transpose" and \
        [list(a.ints) for a in node.attribute if a.name == "perm"] == [[0, 2, 1]]


def wiring(model):
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    consumers = collections.defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node)
    return producer, consumers


def assert_wrapped(model):
    """Every ConvTranspose reads a [0, 2, 1] Transpose and only such one reads it, with no
    bias (the lowering's NWC pattern: TVM writes the bias as an add after the conv)."""
    producer, consumers = wiring(model)
    graph_outputs = {o.name for o in model.graph.output}
    convs = [node for node in model.graph.node if node.op_type == "ConvTranspose"]
    assert convs
    for conv in convs:
        assert is_swap(producer[conv.input[0]]), conv.name
        after = consumers[conv.output[0]]
        assert len(after) == 1 and is_swap(after[0]) and conv.output[0] not in graph_outputs
        assert len(conv.input) == 2 or not conv.input[2]


def loose_transposes(model):
    """The Transposes not next to a ConvTranspose: what the NWC inside costs."""
    producer, consumers = wiring(model)
    return [node.name for node in model.graph.node if node.op_type == "Transpose"
            and getattr(producer.get(node.input[0]), "op_type", None) != "ConvTranspose"
            and not any(c.op_type == "ConvTranspose" for c in consumers[node.output[0]])]


def ops(model):
    return collections.Counter(node.op_type for node in model.graph.node)


# -- hand-made graphs: one per kind of op the transposes move through ---------------------

def chain():
    """ConvTranspose -> LeakyRelu -> ConvTranspose (stride 2) -> Tanh."""
    a, ia = conv_transpose("x", "a", "ct0")
    b, ib = conv_transpose("a1", "b", "ct1", stride=2, kernel=4)
    return model_of([a, helper.make_node("LeakyRelu", ["a"], ["a1"], name="act", alpha=0.1),
                     b, helper.make_node("Tanh", ["b"], ["y"], name="tanh")], ia + ib)


def residual_branches():
    """Two branches of convs added (HiFi-GAN's resblock), the input itself added too."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("a1", "b", "ct_b", bias=False)
    c, ic = conv_transpose("x", "c", "ct_c")
    return model_of([a, helper.make_node("Relu", ["a"], ["a1"], name="relu"), b, c,
                     helper.make_node("Add", ["b", "c"], ["s"], name="branches"),
                     helper.make_node("Add", ["s", "x"], ["y"], name="skip")], ia + ib + ic)


def bias_like_constants():
    """Mul by [C, 1], Add of [1, C, 1], Sub of a scalar, Div by [1], Mul by a [W] ramp (the
    time axis), PRelu with a [C, 1] slope: each as it broadcasts NWC."""
    a, ia = conv_transpose("x", "a", "ct")
    nodes = [a,
             helper.make_node("Mul", ["a", "scale"], ["m"], name="scale"),
             helper.make_node("Add", ["shift", "m"], ["s"], name="shift"),
             helper.make_node("Sub", ["s", "half"], ["h"], name="half"),
             helper.make_node("Div", ["h", "three"], ["d"], name="div"),
             helper.make_node("Mul", ["d", "ramp"], ["r"], name="ramp"),
             helper.make_node("PRelu", ["r", "slope"], ["p"], name="prelu"),
             helper.make_node("Clip", ["p", "low", ""], ["y0"], name="clip")]
    b, ib = conv_transpose("y0", "y", "ct_out")
    inits = ia + ib + [constant("scale", RNG.standard_normal((C, 1))),
                       constant("shift", RNG.standard_normal((1, C, 1))),
                       constant("half", 0.5), constant("three", [3.0]),
                       constant("ramp", np.arange(W)), constant("slope", [[0.1]] * C),
                       constant("low", -1.0)]
    return model_of(nodes + [b], inits)


def tensor_product():
    """Mul of two computed tensors and of a [1, 1, 1] one (Sigmoid of a scalar input)."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("x", "b", "ct_b")
    nodes = [a, b, helper.make_node("Mul", ["a", "b"], ["m"], name="gate"),
             helper.make_node("Sigmoid", ["g"], ["g1"], name="sig"),
             helper.make_node("Div", ["m", "g1"], ["y"], name="div")]
    return model_of(nodes, ia + ib, inputs=[tensor("x", [1, C, W]), tensor("g", [1, 1, 1])])


def pads_and_slices(opset=17):
    """Pad (reflect, on time; constant, on channels) and Slice (on time, with a negative
    axis and a step, and with no axes at all) between convs."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("s3", "y", "ct_b", cin=C + 1)
    nodes = [a,
             helper.make_node("Pad", ["a", "pads_time"], ["p1"], name="pad_time",
                              mode="reflect"),
             helper.make_node("Slice", ["p1", "starts", "ends", "axes_time"], ["s1"],
                              name="slice_time"),
             helper.make_node("Slice", ["s1", "starts", "big", "minus_one", "two"], ["s2"],
                              name="slice_step"),
             helper.make_node("Slice", ["s2", "zeros", "all_ends"], ["s2b"], name="slice_all"),
             helper.make_node("Pad", ["s2b", "pads_channel", "value"], ["s3"],
                              name="pad_channel")]
    inits = ia + ib + [
        constant("pads_time", [0, 0, 3, 0, 0, 1], np.int64),
        constant("starts", [1], np.int64), constant("ends", [-1], np.int64),
        constant("axes_time", [2], np.int64), constant("big", [100], np.int64),
        constant("minus_one", [-1], np.int64), constant("two", [2], np.int64),
        constant("zeros", [0, 0, 0], np.int64), constant("all_ends", [1, C, 100], np.int64),
        constant("pads_channel", [0, 1, 0, 0, 0, 0], np.int64), constant("value", 0.25)]
    return model_of(nodes + [b], inits, opset=opset)


def pad_with_axes():
    """Pad's axes input (opset 18), negative: NWC, the Pad is written for every axis
    (onnxruntime 1.32's transpose optimizer mishandles a Pad with axes after a Transpose)."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("p", "y", "ct_b")
    pad = helper.make_node("Pad", ["a", "pads", "", "axes"], ["p"], name="pad", mode="edge")
    inits = ia + ib + [constant("pads", [2, 1], np.int64), constant("axes", [-1], np.int64)]
    return model_of([a, pad, b], inits, opset=18)


def glu():
    """Demucs' GLU: Split on channels (axis 1, and -2), Sigmoid, Mul; Concat back."""
    a, ia = conv_transpose("x", "a", "ct_a", cout=2 * C)
    b, ib = conv_transpose("g", "b", "ct_b")
    nodes = [a, helper.make_node("Split", ["a", "halves"], ["a0", "a1"], name="split", axis=1),
             helper.make_node("Sigmoid", ["a1"], ["a2"], name="sigmoid"),
             helper.make_node("Mul", ["a0", "a2"], ["g"], name="glu"), b,
             helper.make_node("Split", ["b"], ["b0", "b1"], name="split_neg", axis=-2,
                              num_outputs=2),
             helper.make_node("Concat", ["b1", "b0", "b"], ["y"], name="concat", axis=1)]
    return model_of(nodes, ia + ib + [constant("halves", [C, C], np.int64)], opset=18)


def blocked_by_reshape():
    """A Reshape between convs reads NCW: a transpose before it, one after."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("r1", "y", "ct_b")
    nodes = [a, helper.make_node("Relu", ["a"], ["a1"], name="relu"),
             helper.make_node("Reshape", ["a1", "shape"], ["r"], name="reshape"),
             helper.make_node("Elu", ["r"], ["r1"], name="elu"), b]
    shape = constant("shape", [1, C, W], np.int64)
    return model_of(nodes, ia + ib + [shape])


def legacy_opset():
    """Pad and Slice with attributes (opset 9) instead of inputs."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("s", "y", "ct_b")
    nodes = [a, helper.make_node("Pad", ["a"], ["p"], name="pad", pads=[0, 0, 2, 0, 0, 1]),
             helper.make_node("Slice", ["p"], ["s"], name="slice", starts=[1], ends=[1 + W],
                              axes=[2]), b]
    return model_of(nodes, ia + ib, opset=9)


def unit_height():
    """tf2onnx's Unsqueeze / Squeeze of axis 2 between convs (the 2-D form's height)."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("q", "y", "ct_b")
    nodes = [a, helper.make_node("Unsqueeze", ["a", "two"], ["u"], name="unsqueeze"),
             helper.make_node("Relu", ["u"], ["u1"], name="relu4d"),
             helper.make_node("Add", ["u1", "bias4d"], ["u2"], name="bias4d"),
             helper.make_node("Squeeze", ["u2", "two"], ["q"], name="squeeze"), b]
    inits = ia + ib + [constant("two", [2], np.int64),
                       constant("bias4d", RNG.standard_normal((1, C, 1, 1)))]
    return model_of(nodes, inits)


def middle_output():
    """A conv's output is a graph output and feeds the next conv."""
    a, ia = conv_transpose("x", "a", "ct_a")
    b, ib = conv_transpose("a", "y", "ct_b")
    return model_of([a, b], ia + ib, outputs=("a", "y"))


GRAPHS = {f.__name__: f for f in (chain, residual_branches, bias_like_constants,
                                  tensor_product, pads_and_slices, pad_with_axes, glu,
                                  blocked_by_reshape, legacy_opset, unit_height,
                                  middle_output)}


@pytest.mark.parametrize("name", GRAPHS)
def test_same_function_every_conv_wrapped(name):
    model = GRAPHS[name]()
    result = rewritten_and_checked(model)
    assert_wrapped(result)
    allowed = len(model.graph.input) + len(model.graph.output)
    if name == "blocked_by_reshape":
        allowed += 2  # to NCW before the Reshape, back to NWC after it
    assert len(loose_transposes(result)) <= allowed, loose_transposes(result)


def test_chain_transposes_only_at_the_boundaries():
    result = rewritten_and_checked(chain())
    # Per conv: the two the lowering folds; and one at the input, one at the output.
    assert ops(result)["Transpose"] == 2 * 2 + 2
    assert sorted(loose_transposes(result)) == ["x/to_nwc", "y/to_ncw"]


def test_a_layout_bound_op_reads_ncw():
    result = rewritten_and_checked(blocked_by_reshape())
    producer, _ = wiring(result)
    reshape = next(node for node in result.graph.node if node.op_type == "Reshape")
    assert reshape.input[0] == "a1" and is_swap(producer["a1"])  # the model's own value


def test_constants_take_their_nwc_broadcast_shape():
    result = rewritten_and_checked(bias_like_constants())
    shapes = {t.name: list(t.dims) for t in result.graph.initializer}
    assert shapes["scale/nwc"] == [1, 1, C]
    assert shapes["shift/nwc"] == [1, 1, C]
    assert shapes["ramp/nwc"] == [1, W, 1]
    assert "half/nwc" not in shapes and "three/nwc" not in shapes  # scalars stay


def test_pads_and_axes_follow_the_swap():
    result = rewritten_and_checked(pads_and_slices())
    values = {t.name: numpy_helper.to_array(t).tolist() for t in result.graph.initializer}
    assert values["pads_time/nwc"] == [0, 3, 0, 0, 1, 0]
    assert values["axes_time/nwc"] == [1]
    assert values["minus_one/nwc"] == [1]
    assert values["slice_all/axes/nwc"] == [0, 2, 1]
    padded = rewritten_and_checked(pad_with_axes())
    pad = next(node for node in padded.graph.node if node.op_type == "Pad")
    assert len(pad.input) == 2
    assert numpy_helper.to_array(next(t for t in padded.graph.initializer
                                      if t.name == pad.input[1])).tolist() == [0, 2, 0, 0, 1, 0]
    glu_result = rewritten_and_checked(glu())
    axes = {node.name: [a.i for a in node.attribute if a.name == "axis"]
            for node in glu_result.graph.node}
    assert axes["split"] == axes["split_neg"] == axes["concat"] == [2]


def test_a_wrapped_conv_stays_as_it_is():
    """tf2onnx's form (NWC input, Transpose -> ConvTranspose -> Transpose): already what
    the lowering runs; the rewrite gives it back node for node."""
    a, ia = conv_transpose("t", "a", "ct", bias=False)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="to_ncw", perm=[0, 2, 1]), a,
             helper.make_node("Transpose", ["a"], ["y"], name="to_nwc", perm=[0, 2, 1])]
    model = model_of(nodes, ia, inputs=[tensor("x", [1, W, C])])
    result = rewritten_and_checked(model)
    assert [(n.name, n.op_type) for n in result.graph.node] == \
        [(n.name, n.op_type) for n in model.graph.node]


def test_a_model_without_a_kernel_conv_comes_back_unchanged():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct")  # weights: input
    model = model_of([node], [], inputs=[tensor("x", [1, C, W]), tensor("w", [C, C, 3])])
    assert nwc_inside(model).SerializeToString() == model.SerializeToString()


# -- the architectures, as placement.normalized hands them over --------------------------

@pytest.mark.parametrize("name", sorted(architectures.REDUCED_SIZES))
def test_architectures_same_function(name):
    model = normalized(architectures.reduced(name))
    result = rewritten_and_checked(model)
    assert_wrapped(result)
    assert ops(result)["ConvTranspose"] == ops(model)["ConvTranspose"]


@pytest.mark.parametrize("name", ["hifigan-v1", "encodec-decoder", "demucs-v2-decoder",
                                  "keras-tf2onnx-vocoder"])
def test_architectures_transpose_only_at_their_boundaries(name):
    model = normalized(architectures.reduced(name))
    result = nwc_inside(model)
    boundaries = len(model.graph.input) + len(model.graph.output)
    loose = loose_transposes(result)
    if name == "keras-tf2onnx-vocoder":
        # tf2onnx's own [0, 3, 1, 2] after its input Unsqueeze stays (a 4-D layout change).
        loose = [n for n in loose if n != "/model/conv1d/Transpose"]
    assert len(loose) <= boundaries, loose


# -- it reaches the kernel --------------------------------------------------------------

SMALL_HIFIGAN = dict(upsample_rates=(4, 2), upsample_kernels=(8, 4), resblock_kernels=(3,),
                     resblock_dilations=((1, 3),))


def test_every_conv_becomes_an_nwc_kernel():
    pytest.importorskip("tvm")
    from tvm import relax

    from conv1d_transpose.compile.importer import import_onnx
    from conv1d_transpose.compile.lowering import find_conv1d_transposes

    for name in ("hifigan-v1", "encodec-decoder", "demucs-v2-decoder"):
        module = import_onnx(nwc_inside(normalized(architectures.reduced(name))))
        layouts = [plan.geometry.data_format if plan else None
                   for _, function in module.functions_items()
                   if isinstance(function, relax.Function)
                   for plan in find_conv1d_transposes(function).values()]
        assert layouts and set(layouts) == {"NWC"}, (name, layouts)


def test_hifigan_on_tvm_matches_onnxruntime(cache_dir):
    pytest.importorskip("tvm")
    from conv1d_transpose.runtime import open_tvm_session

    original = architectures.reduced("hifigan-v1", **SMALL_HIFIGAN)
    session = open_tvm_session(nwc_inside(normalized(original)), cache_dir=cache_dir)
    assert session.scheduled
    feeds = random_feeds(original)
    want = run(original, feeds, True)[0]
    got = session.run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
