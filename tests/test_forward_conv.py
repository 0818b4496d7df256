"""A stride-1 1-D Conv as a ConvTranspose (compile/forward_conv.py): onnxruntime gives the
same answer for both forms, on every kernel width, dilation and padding a vocoder uses,
and TVM runs the rewritten form on our kernel."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import conv1d_transpose as ct
from conv1d_transpose.compile.forward_conv import as_conv_transpose

RNG = np.random.default_rng(7)


def conv(cin, cout, K, width, **attributes):
    w = numpy_helper.from_array(RNG.standard_normal((cout, cin, K)).astype(np.float32), "w")
    b = numpy_helper.from_array(RNG.standard_normal(cout).astype(np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attributes)
    return node, {"w": w, "b": b}


def model(node, initializers, cin, width):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, cin, width])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])


def run(m, x):
    session = onnxruntime.InferenceSession(m.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


# Kernel widths and dilations of HiFi-GAN's and EnCodec's residual blocks, 'same' and
# 'valid' pads, asymmetric ones, and auto_pad.
CASES = [dict(K=K, d=d, pads=pads) for K, d in itertools.product((1, 3, 7, 11), (1, 3, 5))
         for pads in ("same", "valid", "left")] + [
    dict(K=4, d=1, auto_pad="SAME_UPPER"), dict(K=5, d=1, auto_pad="SAME_LOWER"),
    dict(K=5, d=1, auto_pad="VALID"), dict(K=2, d=1, pads=[1, 0])]


def attributes_of(case):
    K, d = case["K"], case["d"]
    span = (K - 1) * d
    result = {"dilations": [d], "kernel_shape": [K]}
    if "auto_pad" in case:
        result["auto_pad"] = case["auto_pad"]
    elif isinstance(case["pads"], list):
        result["pads"] = case["pads"]
    else:
        result["pads"] = {"same": [span // 2, span - span // 2], "valid": [0, 0],
                          "left": [span, 0]}[case["pads"]]
    return result


@pytest.mark.parametrize("case", CASES, ids=str)
def test_onnxruntime_gives_the_same_answer_for_both_forms(case):
    cin, cout, width = 3, 2, 60
    node, weights = conv(cin, cout, case["K"], width, **attributes_of(case))
    x = RNG.standard_normal((1, cin, width)).astype(np.float32)
    new, tensor = as_conv_transpose(node, weights, width)
    assert new.op_type == "ConvTranspose" and new.name == "conv"
    expected = run(model(node, list(weights.values()), cin, width), x)
    got = run(model(new, [tensor, weights["b"]], cin, width), x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attributes, why", [
    ({"strides": [2]}, "a stride"),
    ({"pads": [4, 0], "kernel_shape": [3]}, "pads wider than the kernel"),
    ({"group": 3}, "groups"),
])
def test_a_conv_it_cannot_take_is_left_alone(attributes, why):
    node, weights = conv(3, 3 if "group" not in attributes else 1, 3, 20, **attributes)
    assert as_conv_transpose(node, weights, 20) is None, why


@pytest.mark.parametrize("case", [CASES[0], CASES[16], CASES[-3], CASES[-1]], ids=str)
def test_tvm_runs_the_rewritten_conv_on_our_kernel(case, tmp_path, split_kept):
    # (split_kept: auto keeps a TVM segment only where it measures faster: not on a layer
    # this small.)
    cin, cout, width = 5, 4, 33
    node, weights = conv(cin, cout, case["K"], width, **attributes_of(case))
    x = RNG.standard_normal((1, cin, width)).astype(np.float32)
    m = model(node, list(weights.values()), cin, width)
    session = ct.InferenceSession(m, backend="auto", cache_dir=tmp_path)
    assert session.placement == {"conv": "tvm:host"}
    np.testing.assert_allclose(session.run(None, {"x": x})[0], run(m, x), rtol=1e-4,
                               atol=1e-4)
