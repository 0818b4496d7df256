"""Exporting into model graphs: dynamic shapes, the local function, the embedding builder."""
import numpy as np
import onnx
import onnx.inliner
import onnxruntime
import pytest
from onnx import TensorProto, helper

import conv1d_transpose as ct
from conv1d_transpose.graph import build_model, make_spec, max_error
from conv1d_transpose.graph.embed import add_conv1d_transpose
from conv1d_transpose.graph.sweeps import random_arrays

LAYERS = [  # (input shape, filters shape, output shape, stride, padding, layout, dilation)
    ((2, 5, 3), (4, 6, 3), (2, 10, 6), 2, "SAME", "NWC", 1),
    ((1, 3, 7), (5, 2, 3), (1, 2, 27), 3, "VALID", "NCW", 2),
    ((1, 6, 2), (2, 4, 2), (1, 30, 4), 5, "SAME", "NWC", 1),  # K < s
]


def session(model):
    onnx.checker.check_model(model, full_check=True)
    return onnxruntime.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])


def spec_at(layer, batch, width):
    """The same layer at another batch and input width (output width following it)."""
    x, f, y, s, padding, layout, d = layer
    dk = (f[0] - 1) * d + 1
    out = width * s if padding == "SAME" else (width - 1) * s + dk
    if layout == "NWC":
        return make_spec((batch, width, x[2]), f, (batch, out, y[2]), s, padding, layout, d)
    return make_spec((batch, x[1], width), f, (batch, y[1], out), s, padding, layout, d)


@pytest.mark.parametrize("layer", LAYERS, ids=str)
@pytest.mark.parametrize("as_function", [False, True])
def test_one_dynamic_model_serves_every_batch_and_width(layer, as_function):
    spec = make_spec(*layer)
    _, f = random_arrays(spec.input_shape, spec.filters_shape, "float32")
    model = build_model(spec, f, dynamic_batch=True, dynamic_width=True, as_function=as_function)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert "batch" in dims and "in_width" in dims
    run = session(model)
    for batch, width in [(1, 1), (3, 4), (2, 17)]:
        other = spec_at(layer, batch, width)
        x, _ = random_arrays(other.input_shape, other.filters_shape, "float32", seed=width)
        error, ok = max_error(run.run(None, {"input": x})[0], x, f, other)
        assert ok, (batch, width, error)


def test_dynamic_width_needs_an_output_width_that_follows_from_the_input():
    spec = make_spec((1, 5, 3), (4, 6, 3), (1, 9, 6), 2, "SAME")  # O = 9, not 5*2
    with pytest.raises(ct.ArgumentError, match="dynamic_width=True needs"):
        build_model(spec, dynamic_width=True)
    build_model(spec, dynamic_batch=True)  # a static width with a dynamic batch is fine


def test_function_export_is_one_readable_node():
    spec = make_spec(*LAYERS[0])
    _, f = random_arrays(spec.input_shape, spec.filters_shape, "float32")
    model = build_model(spec, f, as_function=True)
    (node,) = model.graph.node
    assert (node.domain, node.op_type) == ("ai.conv1d_transpose", "Conv1DTranspose")
    assert [fn.name for fn in model.functions] == ["Conv1DTranspose"]
    inlined = onnx.inliner.inline_local_functions(model)
    assert [n.op_type for n in inlined.graph.node] == ["Transpose", "Transpose", "ConvTranspose", "Transpose"]


def test_op_to_onnx_switches():
    f = random_arrays((1, 5, 3), (4, 6, 3), "float32")[1]
    op = ct.Conv1DTranspose(f, [1, 10, 6], 2, backend="onnxruntime")
    forms = {p.key: p.value for p in op.to_onnx(portable=True).metadata_props}
    assert forms["conv1d_transpose.form"] == "explicit"
    conv = next(n for n in op.to_onnx().graph.node if n.op_type == "ConvTranspose")
    assert "output_shape" in [a.name for a in conv.attribute]
    assert len(op.to_onnx(as_function=True).graph.node) == 1


def vocoder_like_graph():
    """Conv -> [conv1d_transpose] -> LeakyRelu -> [conv1d_transpose] -> Tanh, NWC data."""
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((8, 1, 3)).astype(np.float32)  # Conv is NCW: [out, in, K]
    nodes = [
        helper.make_node("Transpose", ["audio"], ["a_ncw"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["a_ncw", "conv_w"], ["c_ncw"], pads=[1, 1]),
        helper.make_node("Transpose", ["c_ncw"], ["features"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(nodes, "vocoder", [helper.make_tensor_value_info(
        "audio", TensorProto.FLOAT, ["batch", 16, 1])], [],
        initializer=[onnx.numpy_helper.from_array(conv_w, "conv_w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), rng


@pytest.mark.parametrize("as_function", [False, True])
def test_builder_inserts_two_layers_into_an_existing_model(as_function):
    model, rng = vocoder_like_graph()
    f1 = rng.standard_normal((8, 4, 8)).astype(np.float32)
    f2 = rng.standard_normal((4, 2, 4)).astype(np.float32)
    up1 = add_conv1d_transpose(model, "features", f1, [None, 64, 4], 4, name="up",
                               as_function=as_function)
    model.graph.node.append(helper.make_node("LeakyRelu", [up1], ["act"], alpha=0.1))
    up2 = add_conv1d_transpose(model, "act", f2, [None, 128, 2], 2, name="up",
                               as_function=as_function)
    assert up1 != up2  # the second "up" got a unique name
    model.graph.node.append(helper.make_node("Tanh", [up2], ["wave"]))
    model.graph.output.append(helper.make_tensor_value_info("wave", TensorProto.FLOAT, ["batch", 128, 2]))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    wave = inferred.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in wave] == ["batch", 128, 2]

    audio = rng.standard_normal((3, 16, 1)).astype(np.float32)
    (got,) = session(model).run(None, {"audio": audio})
    # The same chain from the public API and numpy, step by step.
    conv_w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    padded = np.pad(audio[:, :, 0], ((0, 0), (1, 1)))
    features = np.stack([sum(padded[:, k:k + 16] * conv_w[o, 0, k] for k in range(3))
                         for o in range(8)], axis=-1).astype(np.float32)
    h = ct.conv1d_transpose(features, f1, [3, 64, 4], 4, backend="onnxruntime")
    h = np.where(h > 0, h, 0.1 * h)
    want = np.tanh(ct.conv1d_transpose(h, f2, [3, 128, 2], 2, backend="onnxruntime"))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_builder_with_filters_from_the_model_and_clear_errors():
    model, rng = vocoder_like_graph()
    f = rng.standard_normal((8, 4, 8)).astype(np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(f, "trained/up1"))
    out = add_conv1d_transpose(model, "features", "trained/up1", [None, 64, 4], 4)
    assert out.endswith("/output")
    with pytest.raises(ct.ArgumentError, match="'nope' is not a tensor"):
        add_conv1d_transpose(model, "nope", f, [None, 64, 4], 4)
    with pytest.raises(ct.ShapeError, match="allowed widths"):
        add_conv1d_transpose(model, "features", f, [None, 65, 4], 4)
    old = helper.make_model(model.graph, opset_imports=[helper.make_opsetid("", 9)])
    with pytest.raises(ct.ArgumentError, match="opset 9"):
        add_conv1d_transpose(old, "features", f, [None, 64, 4], 4)
