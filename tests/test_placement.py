"""Per-node placement (issue 29): `auto` gives TVM the ConvTranspose nodes our kernel takes
and onnxruntime the rest of a model; the split model gives onnxruntime's answer."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import conv1d_transpose as ct
from conv1d_transpose.runtime import placement, session as session_module
from conv1d_transpose.runtime.session import BackendFallbackWarning

RNG = np.random.default_rng(29)


@pytest.fixture(autouse=True)
def split_measures_faster(split_kept):
    """These tests check what goes where; on models this small onnxruntime is faster,
    and auto would (rightly) take it: the guard has tests of its own below."""


def weight(name, *shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)


def model_of(nodes, initializers, inputs, outputs, opset=17):
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def vocoder_block(width=12, channels=8):
    """Conv -> LeakyRelu -> ConvTranspose (x4, NCW as torch exports it) -> Conv + residual:
    a HiFi-GAN stage in miniature."""
    c, h = channels, channels // 2
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["a"], name="conv_pre", pads=[1, 1]),
        helper.make_node("LeakyRelu", ["a"], ["a1"], name="act", alpha=0.1),
        helper.make_node("ConvTranspose", ["a1", "wt", "bt"], ["u"], name="up",
                         strides=[4], pads=[2, 2]),
        helper.make_node("Conv", ["u", "w1", "b1"], ["r"], name="conv_res", pads=[1, 1]),
        helper.make_node("Add", ["u", "r"], ["y"], name="residual"),
    ]
    inits = [weight("w0", c, 4, 3), weight("b0", c), weight("wt", c, h, 8), weight("bt", h),
             weight("w1", h, h, 3), weight("b1", h)]
    return model_of(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 [1, 4, width])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "w"])])


def split_block():
    """`vocoder_block` with a Softplus (an op TVM_ELEMENTWISE does not name) after its
    LeakyRelu: a model that splits."""
    model = vocoder_block()
    up = next(n for n in model.graph.node if n.name == "up")
    up.input[0] = "a2"
    model.graph.node.insert(2, helper.make_node("Softplus", ["a1"], ["a2"], name="soft"))
    return model


def onnxruntime_answer(model, feeds):
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_a_vocoder_block_runs_on_tvm_with_its_activation_and_residual(tmp_path):
    """Its convolutions on our kernel, and the LeakyRelu and residual Add between them in
    the same TVM segment (no round trip to onnxruntime)."""
    model = vocoder_block()
    x = RNG.standard_normal((1, 4, 12)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert session.placement == {"conv_pre": "tvm:host", "act": "tvm:host",
                                 "up": "tvm:host", "conv_res": "tvm:host",
                                 "residual": "tvm:host"}
    assert session.backend == "tvm:host"
    [y] = session.run(None, {"x": x})
    [expected] = onnxruntime_answer(model, {"x": x})
    assert y.shape == expected.shape == (1, 4, 48)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert [arg.name for arg in session.get_inputs()] == ["x"]
    assert session.get_inputs()[0].shape == [1, 4, 12]
    assert [arg.name for arg in session.get_outputs()] == ["y"]


@pytest.mark.parametrize("kernels", [3, 1])
def test_a_segment_of_several_kernels_runs_nwc_between_them(kernels, tmp_path, monkeypatch,
                                                            split_kept):
    """A TVM segment with NWC_INSIDE_KERNELS convolutions or more is built with its
    tensors NWC between them (runtime/nwc_inside.py: each conv between [0, 2, 1]
    Transposes, which the lowering folds into an NWC kernel); one of a single conv is
    built as it is. Same placement, onnxruntime's answer."""
    from conv1d_transpose.runtime import nwc_inside, split_session

    assert split_session.NWC_INSIDE_KERNELS == 2
    built = []
    real = nwc_inside.nwc_inside
    monkeypatch.setattr(nwc_inside, "nwc_inside", lambda m: built.append(m) or real(m))
    model = vocoder_block()
    if kernels == 1:  # Softplus (onnxruntime) on either side of `up`: one kernel a segment
        model = split_block()
        conv_res = next(n for n in model.graph.node if n.name == "conv_res")
        conv_res.op_type, conv_res.input[:] = "Softplus", ["u"]
        del conv_res.attribute[:]
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert [n for n, b in session.placement.items() if b == "tvm:host" and n in
            ("conv_pre", "up", "conv_res")] == (["conv_pre", "up", "conv_res"] if kernels == 3
                                               else ["conv_pre", "up"])
    assert len(built) == (1 if kernels == 3 else 0)
    x = RNG.standard_normal((1, 4, 12)).astype(np.float32)
    [y] = session.run(None, {"x": x})
    np.testing.assert_allclose(y, onnxruntime_answer(model, {"x": x})[0], rtol=1e-4,
                               atol=1e-5)


def test_an_op_only_onnxruntime_runs_splits_the_block_and_its_neighbours_stay_on_tvm(
        tmp_path):
    """A Softplus (not one TVM_ELEMENTWISE names) between the kernels goes to onnxruntime;
    the LeakyRelu after the first conv stays with it on TVM, and so does the residual."""
    model = split_block()
    x = RNG.standard_normal((1, 4, 12)).astype(np.float32)
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert session.placement == {"conv_pre": "tvm:host", "act": "tvm:host",
                                 "soft": "onnxruntime:cpu", "up": "tvm:host",
                                 "conv_res": "tvm:host", "residual": "tvm:host"}
    [y] = session.run(None, {"x": x})
    [expected] = onnxruntime_answer(model, {"x": x})
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["Elu", "Tanh", "Sigmoid"])
def test_activations_on_tvm_keep_onnxruntimes_answer_for_nan_and_inf(op, tmp_path):
    """TVM's importer writes Elu as -alpha relu(1 - exp(x)) + relu(x), 0 for a NaN input;
    placement.tvm_ready rewrites it, and Tanh/Exp's fast forms keep NaN and saturate at
    +-Inf as onnxruntime does."""
    model = vocoder_block()
    act = next(n for n in model.graph.node if n.name == "act")
    act.op_type = op
    del act.attribute[:]
    if op == "Elu":
        act.attribute.append(helper.make_attribute("alpha", 0.7))
    # The activation's input straight from the graph (so NaN and Inf reach it).
    act.input[0] = "x"
    conv_pre = next(n for n in model.graph.node if n.name == "conv_pre")
    model.graph.node.remove(conv_pre)
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "w0"))
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "b0"))
    wt = next(t for t in model.graph.initializer if t.name == "wt")
    wt.CopyFrom(weight("wt", 4, 4, 8))
    for name in ("bt", "w1", "b1"):
        t = next(t for t in model.graph.initializer if t.name == name)
        t.CopyFrom(weight(name, *([4] if name != "w1" else [4, 4, 3])))
    act_out = helper.make_tensor_value_info("a1", TensorProto.FLOAT, [1, 4, 12])
    model.graph.output.append(act_out)
    x = (RNG.standard_normal((1, 4, 12)) * 30).astype(np.float32)
    x[0, 0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert session.placement["act"] == "tvm:host"
    [_, a] = session.run(None, {"x": x})
    [_, expected] = onnxruntime_answer(model, {"x": x})
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)


def test_a_model_our_kernel_cannot_help_goes_to_onnxruntime_without_tvm(monkeypatch):
    """No TVM import is tried (it cost 3-4.6 s per session for LSTM models, issue 29)."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["y"], name="only_conv", pads=[1, 1],
                              strides=[2])]
    model = model_of(nodes, [weight("w0", 3, 4, 3)],
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "w"])])

    def no_tvm(*args, **kwargs):
        raise AssertionError("TVM was asked to import a model it cannot speed up")

    monkeypatch.setattr(session_module, "_tvm_session", no_tvm)
    with pytest.warns(BackendFallbackWarning,
                      match="node 'only_conv': our kernel takes a Conv only when it is "
                            "1-D, of stride 1"):
        session = ct.InferenceSession(model, backend="auto")
    assert session.backend == "onnxruntime:cpu"
    assert session.placement == {"only_conv": "onnxruntime:cpu"}


def lstm_then_upsample(width=5, channels=4):
    """A BiLSTM over time (Demucs' and EnCodec's bottleneck) then a ConvTranspose."""
    c = channels
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_time_major", perm=[2, 0, 1]),
        helper.make_node("LSTM", ["t", "lw", "lr"], ["seq"], name="lstm", hidden_size=c,
                         direction="bidirectional"),
        # seq: [W, 2, N, C] -> [N, 2C, W]
        helper.make_node("Transpose", ["seq"], ["s1"], name="seq_to_ncw", perm=[2, 1, 3, 0]),
        helper.make_node("Reshape", ["s1", "shape"], ["s2"], name="merge_directions"),
        helper.make_node("ConvTranspose", ["s2", "wt"], ["y"], name="up", strides=[2]),
    ]
    inits = [weight("lw", 2, 4 * c, c), weight("lr", 2, 4 * c, c),
             numpy_helper.from_array(np.array([1, 2 * c, width], np.int64), "shape"),
             weight("wt", 2 * c, 3, 4)]
    return model_of(nodes, inits,
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, width])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "w"])])


def test_an_lstm_stays_on_onnxruntime_and_tvm_prints_nothing(tmp_path, capfd):
    model = lstm_then_upsample()
    x = RNG.standard_normal((1, 4, 5)).astype(np.float32)
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert session.placement["lstm"] == "onnxruntime:cpu"
    assert session.placement["up"] == "tvm:host"
    [y] = session.run(None, {"x": x})
    [expected] = onnxruntime_answer(model, {"x": x})
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert "Error converting operator" not in capfd.readouterr().out


def weight_norm_model():
    """Two ConvTransposes, the first with weight norm left in the graph as torch's current
    exporter writes it (`g * v / ||v||`), the second with a constant weight."""
    nodes = [
        helper.make_node("ReduceL2", ["v"], ["v_norm"], name="norm", axes=[1, 2]),
        helper.make_node("Div", ["v", "v_norm"], ["v_unit"], name="unit"),
        helper.make_node("Mul", ["g", "v_unit"], ["w_norm"], name="weight_norm"),
        helper.make_node("ConvTranspose", ["x", "w_norm"], ["a"], name="up_norm",
                         strides=[2]),
        helper.make_node("ConvTranspose", ["a", "w_const"], ["y"], name="up_const",
                         strides=[2]),
    ]
    inits = [weight("g", 4, 1, 1), weight("v", 4, 4, 4), weight("w_const", 4, 2, 4)]
    return model_of(nodes, inits,
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "w"])])


def test_weight_norm_in_the_graph_is_computed_once_and_its_conv_transpose_goes_to_tvm(
        tmp_path):
    model = weight_norm_model()
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert session.placement == {"norm": "folded", "unit": "folded", "weight_norm": "folded",
                                 "up_norm": "tvm:host", "up_const": "tvm:host"}
    x = RNG.standard_normal((1, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0],
                               onnxruntime_answer(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_a_conv_transpose_with_weights_from_an_input_alone_runs_on_onnxruntime(tmp_path):
    """Node by node, never all-or-nothing: a weight that is not a constant (here scaled by
    a graph input) keeps its node on onnxruntime; the constant one still goes to TVM."""
    nodes = [
        helper.make_node("Mul", ["g", "v"], ["w_norm"], name="weight_norm"),
        helper.make_node("ConvTranspose", ["x", "w_norm"], ["a"], name="up_norm",
                         strides=[2]),
        helper.make_node("ConvTranspose", ["a", "w_const"], ["y"], name="up_const",
                         strides=[2]),
    ]
    inits = [weight("v", 4, 4, 4), weight("w_const", 4, 2, 4)]
    model = model_of(nodes, inits,
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6]),
                      helper.make_tensor_value_info("g", TensorProto.FLOAT, [4, 1, 1])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "w"])])
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert session.placement == {"weight_norm": "onnxruntime:cpu",
                                 "up_norm": "onnxruntime:cpu", "up_const": "tvm:host"}
    g = RNG.standard_normal((4, 1, 1)).astype(np.float32)
    x = RNG.standard_normal((1, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x, "g": g})[0],
                               onnxruntime_answer(model, {"x": x, "g": g})[0],
                               rtol=1e-4, atol=1e-5)


def test_a_tvm_segment_that_fails_runs_on_onnxruntime_and_says_which(monkeypatch):
    from conv1d_transpose.graph.errors import BackendError

    def failing(*args, **kwargs):
        raise BackendError("the build broke")

    monkeypatch.setattr(session_module, "_tvm_session", failing)
    model = vocoder_block()
    # (The kernels' segment with the ops around them fails, then each kernel alone.)
    with pytest.warns(BackendFallbackWarning, match="nodes 'up', 'conv_res' run on "
                                                    "onnxruntime:cpu: the build broke"):
        session = ct.InferenceSession(model, backend="auto")
    assert set(session.placement.values()) == {"onnxruntime:cpu"}
    x = RNG.standard_normal((1, 4, 12)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0],
                               onnxruntime_answer(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def exported_layer():
    """Our own export of one layer (NWC: Transpose -> ConvTranspose -> Transpose)."""
    f = RNG.standard_normal((4, 2, 3)).astype(np.float32)
    return ct.Conv1DTranspose(f, [1, 12, 2], 2, backend="onnxruntime").to_onnx()


def test_a_model_of_one_layer_still_runs_whole_on_tvm(tmp_path):
    session = ct.InferenceSession(exported_layer(), backend="auto", cache_dir=tmp_path)
    assert session.backend == "tvm:host"
    assert set(session.placement.values()) == {"tvm:host"}


# --- the pure parts ------------------------------------------------------------------


def test_segments_read_what_earlier_segments_made_and_hand_on_what_later_ones_read():
    model = placement.normalized(vocoder_block())
    parts = placement.segments(model, {2})
    assert [(p.on_tvm, [n.name for n in p.nodes]) for p in parts] == [
        (False, ["conv_pre", "act"]), (True, ["up"]), (False, ["conv_res", "residual"])]
    assert [(p.inputs, p.outputs) for p in parts] == [
        (["x"], ["a1"]), (["a1"], ["u"]), (["u"], ["y"])]


@pytest.mark.parametrize("change, reason", [
    ({"group": 2}, "group=2"),
    ({"weights_computed": True}, "its weights 'w' are not a constant"),
    ({"symbolic": True}, "its input 'x' has no static shape"),
    ({"two_d": True}, "it is 2-D"),
])
def test_the_kernel_refuses_a_node_in_words(change, reason):
    shape = ["n", 4, "time"] if change.get("symbolic") else [1, 4, 6]
    w_shape = (4, 2, 2, 3) if change.get("two_d") else (4, 2 // change.get("group", 1), 3)
    if change.get("two_d"):  # (a unit-height one is rewritten to 1-D: tf2onnx's form)
        shape = [1, 4, 2, 6]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up",
                              group=change.get("group", 1))]
    inits = [weight("w", *w_shape)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    if change.get("weights_computed"):  # from an input: not a constant, nothing to fold
        nodes.insert(0, helper.make_node("Neg", ["w0"], ["w"], name="neg"))
        inits = []
        inputs.append(helper.make_tensor_value_info("w0", TensorProto.FLOAT, w_shape))
    model = model_of(nodes, inits, inputs,
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "w"])])
    model = placement.normalized(model)
    up = [n for n in model.graph.node if n.name == "up"][0]
    assert reason in placement.kernel_refusal(up, model)


def test_layout_transposes_go_with_their_conv_transpose():
    """Our own NWC export: Transpose -> ConvTranspose -> Transpose, one TVM segment."""
    model = placement.normalized(exported_layer())
    convs = {i for i, n in enumerate(model.graph.node) if n.op_type == "ConvTranspose"}
    transposes = {i for i, n in enumerate(model.graph.node) if n.op_type == "Transpose"}
    assert len(transposes) == 2
    assert placement.layout_transposes(model, convs) == transposes


def test_normalizing_computes_weight_norm_and_keeps_the_node_names():
    model = weight_norm_model()
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    g, v = arrays["g"], arrays["v"]
    expected = g * v / np.sqrt((v.astype(np.float64) ** 2).sum(axis=(1, 2), keepdims=True))
    normal = placement.normalized(model)
    folded = {t.name: numpy_helper.to_array(t) for t in normal.graph.initializer}
    np.testing.assert_allclose(folded["w_norm"], expected, rtol=1e-6)
    assert not {"g", "v"} & set(folded)  # read by nothing else now
    assert [n.name for n in normal.graph.node] == ["up_norm", "up_const"]
    assert placement.folded_nodes(model, normal) == ["norm", "unit", "weight_norm"]


def tf2onnx_layer(width=6, cin=3, cout=2, K=4, s=2):
    """What tf2onnx writes for Keras' Conv1DTranspose (NWC): Unsqueeze to [N, 1, W, C],
    Transpose to NCHW, a 2-D ConvTranspose with a [Cin, Cout, 1, K] kernel, and back."""
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis1"], ["x4"], name="expand"),
        helper.make_node("Transpose", ["x4"], ["xc"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("ConvTranspose", ["xc", "w", "b"], ["yc"], name="conv2d_transpose",
                         strides=[1, s], pads=[0, 1, 0, 1], kernel_shape=[1, K]),
        helper.make_node("Transpose", ["yc"], ["y4"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Squeeze", ["y4", "axis1"], ["y"], name="squeeze"),
        helper.make_node("LeakyRelu", ["y"], ["z"], name="act", alpha=0.2),
    ]
    inits = [weight("w", cin, cout, 1, K), weight("b", cout),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    return model_of(nodes, inits,
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width, cin])],
                    [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", "w", "c"])])


def test_tf2onnx_unit_height_conv_transpose_goes_to_tvm(tmp_path):
    model = tf2onnx_layer()
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert session.placement["conv2d_transpose"] == "tvm:host"
    assert set(session.placement) == {n.name for n in model.graph.node}
    x = RNG.standard_normal((1, 6, 3)).astype(np.float32)
    [y] = session.run(None, {"x": x})
    [expected] = onnxruntime_answer(model, {"x": x})
    assert y.shape == expected.shape == (1, 12, 2)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_tvm_names_an_op_it_cannot_import_in_words(tmp_path):
    with pytest.raises(ct.BackendError, match="TVM cannot import this model: The following "
                                              "operators are not supported .*: LSTM"):
        ct.InferenceSession(lstm_then_upsample(), backend="tvm", cache_dir=tmp_path)


def test_tvm_prints_nothing_when_an_operator_fails_to_convert(tmp_path, capfd, monkeypatch):
    """TVM's importer prints "Error converting operator ..." before it raises."""
    from tvm.relax.frontend.onnx import onnx_frontend

    def broken(self, op_name, *args, **kwargs):
        raise RuntimeError(f"cannot convert {op_name}")

    monkeypatch.setattr(onnx_frontend.ONNXGraphImporter, "_convert_operator", broken)
    with pytest.raises(ct.BackendError):
        ct.InferenceSession(exported_layer(), backend="tvm", cache_dir=tmp_path)
    assert "Error converting operator" not in capfd.readouterr().out


@pytest.mark.parametrize("split_wins", [True, False])
def test_auto_keeps_the_split_only_where_it_measures_faster(split_wins, tmp_path, monkeypatch):
    """Under auto no model runs slower than onnxruntime alone: the split is timed against
    it when the session opens (here with the timer replaced by one that says who won)."""
    from conv1d_transpose.runtime import split_session

    def rigged(sessions, feeds, **kwargs):
        if set(sessions) == {"tvm", "onnxruntime"}:  # each segment: TVM is faster
            return {"tvm": 1.0, "onnxruntime": 2.0}
        assert set(sessions) == {"split", "alone"} and feeds["x"].shape == (1, 4, 12)
        return {"split": 1.0 if split_wins else 3.0, "alone": 2.0}

    monkeypatch.setattr(split_session, "median_times", rigged)
    model = split_block()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    messages = [str(w.message) for w in caught if w.category is BackendFallbackWarning]
    if split_wins:
        assert session.backend == "tvm:host+onnxruntime:cpu" and not messages
    else:
        assert session.backend == "onnxruntime:cpu"
        assert set(session.placement.values()) == {"onnxruntime:cpu"}
        assert messages == ["backend='auto' runs this model on onnxruntime:cpu alone: it "
                            "measured 2e+03 ms a call on this machine against 3e+03 ms "
                            "with tvm:host+onnxruntime:cpu"]


def test_a_split_within_the_margin_of_onnxruntime_alone_is_not_kept(tmp_path, monkeypatch):
    """A split measured 1% faster at open is noise on a busy machine: auto keeps
    onnxruntime alone unless the split wins by SPLIT_MARGIN."""
    from conv1d_transpose.runtime import session as session_module
    from conv1d_transpose.runtime import split_session

    assert session_module.SPLIT_MARGIN > 1.01
    monkeypatch.setattr(split_session, "median_times", lambda sessions, feeds, **kwargs: {
        "split": 1.98, "alone": 2.0} if "split" in sessions else {"tvm": 1.0,
                                                                  "onnxruntime": 2.0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = ct.InferenceSession(split_block(), backend="auto", cache_dir=tmp_path)
    assert session.backend == "onnxruntime:cpu"
    assert any(w.category is BackendFallbackWarning for w in caught)


def test_median_times_alternates_isolated_blocks():
    import importlib
    median_times = importlib.reload(
        importlib.import_module("conv1d_transpose.runtime.split_session")).median_times

    calls = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def run(self, names, feeds):
            calls.append(self.name)

    ticks = iter(range(1000))
    times = median_times({"a": Fake("a"), "b": Fake("b")}, {}, clock=lambda: next(ticks),
                         budget_s=100)
    # Per block: one untimed call, then 3 timed; blocks a, b, a, b.
    assert calls == ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4
    assert times == {"a": 1, "b": 1}
