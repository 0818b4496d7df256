"""The width form of a stride-1 NCW layer (compile/kernels/source_width.py,
schedule_cpu_width.py): the kernel against a numpy ConvTranspose over channels, taps,
dilations, pads and widths that are not multiples of a vector; Inf and NaN inputs as
onnxruntime answers; the rule of which layers take it; and a Conv through a session."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import conv1d_transpose as ct
from conv1d_transpose.compile.kernels import schedule_cpu_width, source_width
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget

RNG = np.random.default_rng(11)
ZEN4 = CpuTarget(512, 32, 2)


def conv_transpose_reference(x, f, pad_begin, out_width, dilation):
    """ConvTranspose, stride 1: out[o] = sum_k f[k] * x[o + pad_begin - k*d] (float64).
    x [N, Cin, W], f [Cin, Cout, K]."""
    N, _, W = x.shape
    _, cout, K = f.shape
    out = np.zeros((N, cout, out_width))
    for k, o in itertools.product(range(K), range(out_width)):
        w = o + pad_begin - k * dilation
        if 0 <= w < W:
            out[:, :, o] += x[:, :, w].astype(np.float64) @ f[:, :, k].astype(np.float64)
    return out


def transpose_pads(K, d, pads):
    """ConvTranspose (pad_begin, pad_end) of a stride-1 Conv padded 'same', 'valid' or
    'left' (all of the span on the left), as compile/forward_conv.py rewrites it."""
    span = (K - 1) * d
    left, right = {"same": (span // 2, span - span // 2), "valid": (0, 0),
                   "left": (span, 0)}[pads]
    return span - left, span - right


def geometry_of(N, cin, cout, W, K, d, pads):
    pb, pe = transpose_pads(K, d, pads)
    return Geometry(N, W, cin, W + (K - 1) * d - pb - pe, cout, K, 1, d, pb, "NCW", "float32")


@pytest.fixture(scope="module")
def target():
    from conv1d_transpose.compile.targets import get_target
    return get_target("host").tvm_target()


def run_kernel(geometry, x, f, target):
    """The width kernel's output for input x and ConvTranspose filters f [Cin, Cout, K]."""
    import tvm

    func, layout = schedule_cpu_width.build(geometry, target)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target=target).jit()
    dev = tvm.cpu(0)
    packed = source_width.pack_filters(f.transpose(2, 1, 0), layout)
    out = tvm.runtime.empty(geometry.output_shape, "float32", dev)
    lib["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(packed, dev), out)
    return out.numpy(), layout


def check(case, target):
    N, cin, cout, W, K, d, pads = case
    g = geometry_of(*case)
    x = RNG.standard_normal((N, cin, W)).astype(np.float32)
    f = RNG.standard_normal((cin, cout, K)).astype(np.float32)
    got, layout = run_kernel(g, x, f, target)
    expected = conv_transpose_reference(x, f, g.pad_begin, g.out_width, d)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.sqrt(cin * K))
    return layout


# (batch, Cin, Cout, W, K, dilation, pads): every value of each axis at least once, with
# both kernel paths (a zero-padded copy, reading x itself), a short row (one tile, store
# guarded), overlapping last tiles and a channel tail.
CASES = [
    (2, 32, 1, 100, 7, 1, "same"),
    (2, 5, 3, 17, 3, 3, "valid"),
    (1, 1, 16, 1, 11, 5, "same"),
    (2, 5, 33, 100, 1, 1, "valid"),
    (1, 32, 33, 17, 11, 1, "left"),
    (2, 1, 3, 100, 7, 5, "left"),
    (1, 5, 16, 100, 3, 1, "same"),
    (2, 32, 16, 1000, 3, 1, "valid"),
]
SLOW_CASES = [(N, cin, cout, W, K, d, pads) for N, cin, cout, W, K, d, pads in
              itertools.product((2,), (1, 5, 32), (1, 3, 16, 33), (1, 17, 100), (1, 3, 7, 11),
                                (1, 3, 5), ("same", "valid", "left"))
              if W + (K - 1) * d - sum(transpose_pads(K, d, pads)) >= 1
              and (K > 1 or d == 1) and (N, cin, cout, W, K, d, pads) not in CASES][::7]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_width_kernel_computes_conv_transpose(case, target):
    layout = check(case, target)
    assert layout.rows * layout.vectors <= schedule_cpu_width.ACCUMULATORS


def test_both_paths_are_covered():
    padded = {source_width.WidthLayout(geometry_of(*c), *_tile(c)).padded for c in CASES}
    assert padded == {True, False}


def _tile(case):
    layout = schedule_cpu_width.layout_for(geometry_of(*case), ZEN4)
    return layout.rows, layout.vectors


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=str)
def test_the_width_kernel_computes_conv_transpose_on_more_shapes(case, target):
    check(case, target)


def conv_transpose_model(f, pb, pe, d, cin, width):
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[f.shape[2]],
                            strides=[1], pads=[pb, pe], dilations=[d])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, cin, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(f, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])


@pytest.mark.parametrize("case", [(2, 5, 3, 40, 3, 1, "same"), (2, 4, 1, 100, 7, 1, "valid")],
                         ids=str)
def test_inf_and_nan_inputs_give_onnxruntime_s_answer(case, target):
    N, cin, cout, W, K, d, pads = case
    g = geometry_of(*case)
    x = RNG.standard_normal((N, cin, W)).astype(np.float32)
    x[0, 1, 5] = np.inf
    x[1, 0, W - 1] = -np.inf
    x[1, 2, 20] = np.nan
    f = RNG.standard_normal((cin, cout, K)).astype(np.float32)
    got, _ = run_kernel(g, x, f, target)
    pb, pe = transpose_pads(K, d, pads)
    session = onnxruntime.InferenceSession(
        conv_transpose_model(f, pb, pe, d, cin, W).SerializeToString(),
        providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    assert np.isnan(expected).any() and np.isinf(expected).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_rule_takes_few_channel_stride_1_ncw_layers():
    def takes(cin, cout, K, W=12800, **changes):
        g = dataclasses.replace(Geometry(1, W, cin, W, cout, K, 1, 1, (K - 1) // 2, "NCW",
                                         "float32"), **changes)
        return schedule_cpu_width.applies(g, changes.pop("cpu", ZEN4))

    # Taken: HiFi-GAN's conv_post, EnCodec's last conv, 1x1 and K 3 convs of <= 64
    # channels, 128 channels at K <= 3.
    assert takes(32, 1, 7) and takes(32, 1, 7, W=24006) and takes(512, 1, 7)
    assert takes(64, 64, 3) and takes(32, 32, 11) and takes(16, 32, 1)
    assert takes(128, 64, 3) and takes(128, 128, 1)
    # Left to the channel form: 256 channels, 128 channels at K 7.
    assert not takes(256, 256, 3) and not takes(256, 128, 3) and not takes(128, 256, 1)
    assert not takes(128, 128, 7)
    # Only stride-1, unfolded NCW float32 with a static batch on AVX-512.
    assert not takes(32, 1, 7, data_format="NWC")
    assert not takes(32, 1, 7, stride=2)
    assert not takes(32, 2, 1, folded_stride=2, folded_width=12800)
    assert not takes(32, 1, 7, dtype="float16") and not takes(32, 1, 7, dtype="float64")
    assert not takes(32, 1, 7, batch=None)
    g = Geometry(1, 100, 32, 100, 1, 7, 1, 1, 3, "NCW", "float32")
    assert schedule_cpu_width.applies(g, ZEN4)
    assert not schedule_cpu_width.applies(g, CpuTarget(256, 16, 2))


def one_channel_conv(cin, width):
    """HiFi-GAN's conv_post: Conv cin -> 1, K 7, 'same', NCW."""
    w = RNG.standard_normal((1, cin, 7)).astype(np.float32)
    b = RNG.standard_normal(1).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv_post",
                            kernel_shape=[7], pads=[3, 3])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])


@pytest.mark.parametrize("backend", ["auto", "tvm"])
def test_a_one_channel_conv_runs_in_the_width_form(backend, tmp_path, monkeypatch, split_kept):
    """backend='auto' rewrites the Conv as a ConvTranspose (placement.normalized) for our
    kernel; backend='tvm' takes the model as given, so it gets the ConvTranspose."""
    from conv1d_transpose.compile.forward_conv import as_conv_transpose

    cin, width = 32, 700
    m = one_channel_conv(cin, width)
    x = RNG.standard_normal((1, cin, width)).astype(np.float32)
    expected = onnxruntime.InferenceSession(
        m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    if backend == "tvm":
        weights = {t.name: t for t in m.graph.initializer}
        node, tensor = as_conv_transpose(m.graph.node[0], weights, width)
        del m.graph.node[:]
        m.graph.node.append(node)
        m.graph.initializer.remove(weights["w"])
        m.graph.initializer.append(tensor)
    built = []
    build = schedule_cpu_width.build
    monkeypatch.setattr(schedule_cpu_width, "build",
                        lambda g, target, *a: built.append(g) or build(g, target, *a))
    session = ct.InferenceSession(m, backend=backend, cache_dir=tmp_path)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-4)
    assert [(g.out_channels, g.kernel_width, g.data_format) for g in built] == [(1, 7, "NCW")]
