"""Conformance: the public API against the numpy reference and TensorFlow, on the sweep."""
import numpy as np
import pytest

import conv1d_transpose as ct
from conv1d_transpose.graph import max_error
from conv1d_transpose.graph.sweeps import channel_sweep, foundation_sweep, random_arrays
from conftest import tensorflow_or_skip

CASES = list(foundation_sweep())
CHANNEL_CASES = list(channel_sweep())


def run_sweep(compute, dtype, cases=CASES):
    """Run `compute(layer, x, f)` over the sweep's layers; return the mismatching names."""
    mismatches = []
    for index, layer in enumerate(cases):
        x, f = layer.arrays(dtype, seed=index)
        y = compute(layer, x, f)
        error, ok = max_error(y, x, f, layer.spec(dtype))
        if not ok or y.dtype != np.dtype(dtype) or y.shape != layer.output_shape:
            mismatches.append(f"{layer.name}: error {error:.3g}, {y.dtype}, {y.shape}")
    return mismatches


def through_public_api(backend):
    def compute(layer, x, f):
        return ct.conv1d_transpose(x, f, layer.output_shape, layer.stride, layer.padding,
                                   layer.data_format, layer.dilation, backend=backend)
    return compute


def test_sweep_is_large_and_covers_every_case():
    names = [layer.name for layer in CASES]
    assert len(CASES) > 2000
    for part in ("-NWC", "-NCW", "SAME", "VALID", "N0-", "N2-", "-W0-", "-K0-", "-d3-", "-s5-"):
        assert any(part in name for name in names), part


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float16", marks=pytest.mark.slow)])
def test_onnxruntime_matches_reference_on_the_sweep(dtype):
    assert run_sweep(through_public_api("onnxruntime"), dtype) == []


def test_channel_sweep_covers_every_channel_count_and_istft_shapes():
    names = [layer.name for layer in CHANNEL_CASES]
    for cin in (1, 2, 3, 5, 7):
        for cout in (1, 2, 3, 5, 7):
            assert sum(f"-ci{cin}-co{cout}" in name for name in names) >= 4, (cin, cout)
    for part in ("-NWC", "-NCW", "SAME", "VALID", "N0-", "N2-", "-d3-", "-s5-", "-K6-", "-K64-"):
        assert any(part in name for name in names), part
    istft = [layer for layer in CHANNEL_CASES if layer.kernel_width >= 16
             and layer.out_channels == 1 and layer.kernel_width % layer.stride == 0]
    assert {layer.padding for layer in istft} == {"SAME", "VALID"}
    assert {layer.data_format for layer in istft} == {"NWC", "NCW"}


def test_onnxruntime_matches_reference_on_every_channel_count():
    assert run_sweep(through_public_api("onnxruntime"), "float32", CHANNEL_CASES) == []


def test_onnxruntime_refuses_float64_with_a_clear_error():
    x, f = random_arrays((1, 4, 2), (3, 3, 2), "float64")
    with pytest.raises(ct.BackendError, match="onnxruntime:cpu.*float64"):
        ct.conv1d_transpose(x, f, [1, 8, 3], 2, backend="onnxruntime")


@pytest.mark.tensorflow
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_reference_matches_tensorflow_on_the_sweep(dtype):
    tf = tensorflow_or_skip()
    cases = [layer for layer in CASES + CHANNEL_CASES if tensorflow_has_kernel(layer, dtype)]
    assert len(cases) > len(CASES) // 4
    assert run_sweep(lambda layer, x, f: tensorflow_conv1d_transpose(tf, layer, x, f), dtype,
                     cases) == []


def tensorflow_has_kernel(layer, dtype):
    # TF 2.21's CPU float16 and float64 kernels refuse dilation > 1 ("Current CPU
    # implementations do not yet support dilation rates larger than 1"); those cases
    # are checked against the reference only.
    return dtype == "float32" or layer.dilation == 1


def tensorflow_conv1d_transpose(tf, layer, x, f):
    y_shape, s, padding, layout, d = (layer.output_shape, layer.stride, layer.padding,
                                      layer.data_format, layer.dilation)
    if layout == "NCW" and x.dtype != np.float32:
        # TF's CPU kernels have NCW for float32 only (float16/float64: "only supports
        # NHWC"): ask TF in NWC and transpose, which is what NCW means.
        y = tf.nn.conv1d_transpose(x.transpose(0, 2, 1), f, [y_shape[0], y_shape[2], y_shape[1]],
                                   s, padding, "NWC", d).numpy()
        return y.transpose(0, 2, 1)
    return tf.nn.conv1d_transpose(x, f, y_shape, s, padding, layout, d).numpy()


@pytest.mark.tensorflow
@pytest.mark.parametrize("step", [3, pytest.param(1, marks=pytest.mark.slow)],
                         ids=["every-3rd-case", "every-case"])
def test_public_api_equals_tensorflow_on_the_sweep(step):
    """Both against each other directly, float32, within the float32 tolerance (every
    3rd case by default, every case in the slow run)."""
    tf = tensorflow_or_skip()
    api = through_public_api("onnxruntime")
    mismatches = []
    for index, layer in list(enumerate(CASES))[::step]:
        x, f = layer.arrays("float32", seed=index)
        ours = api(layer, x, f)
        theirs = tensorflow_conv1d_transpose(tf, layer, x, f)
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=1e-5, atol=1e-5):
            mismatches.append(layer.name)
    assert mismatches == []


# TensorFlow's own kernel tests (tensorflow/python/kernel_tests/nn_ops/conv1d_transpose_test.py):
# all-ones input [2, W, 3] and filters [3, 2, 3]; each covering tap adds in_channels = 3.
# Expected values per output position, as those tests state them.
TF_KERNEL_TESTS = [
    # (name, W, O, stride, padding, expected per output position)
    ("single stride, SAME 6->6", 6, 6, 1, "SAME", [6, 9, 9, 9, 9, 6]),
    ("stride 2, SAME 4->8", 4, 8, 2, "SAME", [3, 3, 6, 3, 6, 3, 6, 3]),
    ("stride 2, VALID 4->9", 4, 9, 2, "VALID", [3, 3, 6, 3, 6, 3, 6, 3, 3]),
]


@pytest.mark.parametrize("layout", ["NWC", "NCW"])
@pytest.mark.parametrize("name, W, O, stride, padding, expected", TF_KERNEL_TESTS,
                         ids=[row[0] for row in TF_KERNEL_TESTS])
def test_tensorflow_kernel_test_cases(layout, name, W, O, stride, padding, expected):
    x = np.ones((2, W, 3) if layout == "NWC" else (2, 3, W), np.float32)
    f = np.ones((3, 2, 3), np.float32)
    out = [2, O, 2] if layout == "NWC" else [2, 2, O]
    y = ct.conv1d_transpose(x, f, out, stride, padding, layout)
    if layout == "NCW":
        y = y.transpose(0, 2, 1)
    want = np.broadcast_to(np.array(expected, np.float32)[None, :, None], (2, O, 2))
    np.testing.assert_array_equal(y, want)
