"""A Keras vocoder with a free time axis, exported by tf2onnx itself (issue 30: "tf2onnx
with a None time dimension" stopped TVM's importer at `Dynamic pads are not supported
yet`), runs on our kernel at every length and gives TensorFlow's answer.

tf2onnx (extra `reference`, with TensorFlow) writes each Conv1DTranspose of an unknown
width as a ConvTranspose with no pads, then a Slice whose starts and ends and a Pad whose
pads it computes from the tensors' Shapes at run time, and each 'same' Conv1D with
auto_pad SAME_UPPER. The session specialises the model per input shape
(runtime/specialize.py), which folds that arithmetic away.
"""
from __future__ import annotations

import numpy as np
import pytest

import conv1d_transpose as ct
from conv1d_transpose import architectures
from conv1d_transpose.runtime import placement, specialize

from conftest import tensorflow_or_skip

pytestmark = pytest.mark.tensorflow


def tf2onnx_or_skip():
    try:
        import tf2onnx
    except ImportError:
        pytest.skip("tf2onnx not installed (pip install '.[reference]')")
    return tf2onnx


@pytest.fixture(scope="module")
def exported():
    """(Keras model, its tf2onnx export): architectures.keras_melgan_tf2onnx, few channels,
    every stride kept."""
    tensorflow_or_skip()
    tf2onnx_or_skip()
    return architectures.keras_melgan_tf2onnx(mel_channels=16, initial_channels=32,
                                              channels=(16, 8, 8, 4))


def test_the_export_computes_its_pads_at_run_time(exported):
    """What stopped TVM's importer: the pads are a tensor of the graph, not a constant."""
    _, model = exported
    [dim] = [d for d in model.graph.input[0].type.tensor_type.shape.dim if d.dim_param]
    assert dim.dim_param
    constants = {t.name for t in model.graph.initializer}
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    assert len(pads) == 4 and all(n.input[1] not in constants for n in pads)
    assert {n.op_type for n in model.graph.node} >= {"Shape", "Slice", "ConvTranspose"}


def test_it_runs_on_our_kernel_at_every_length_and_gives_tensorflows_answer(exported,
                                                                            tmp_path):
    keras_model, model = exported
    session = ct.InferenceSession(model, backend="tvm", cache_dir=tmp_path)
    kernels = [n.name for n in model.graph.node if n.op_type == "ConvTranspose"]
    for frames in (1, 7, 20):
        x = np.random.default_rng(frames).standard_normal((1, frames, 16)).astype(np.float32)
        [got] = session.run(None, {"x": x})
        want = keras_model(x).numpy()
        assert got.shape == want.shape == (1, frames * 256, 1)
        # (Six layers, each summing in its own order in float32: the whole-model bound
        # of tests/test_specialize.py, not one op's.)
        np.testing.assert_allclose(got, want, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(want).max()))
        placed = session.placement
        assert set(placed) == set(placement.node_names(model.graph))
        assert all(placed[name] == "tvm:host" for name in kernels), placed
        assert all(placed[n.name] == "folded" for n in model.graph.node
                   if n.op_type == "Shape")
    assert session.specialized["inputs"] == {"x": [1, 20, 16]}
    assert len(session.specialized["held"]) == 3


def test_our_kernel_takes_every_convolution_once_the_shapes_are_fixed(exported):
    """Its Conv1DTransposes, and its 'same' Conv1Ds (2-D, unit height, auto_pad
    SAME_UPPER), which `normalized` writes as ConvTransposes."""
    _, model = exported
    static = placement.normalized(specialize.specialized(model, {"x": (1, 9, 16)}))
    types = placement.value_types(static)
    convolutions = [n for n in static.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convolutions) == 6
    assert [placement.kernel_refusal(n, static, types) for n in convolutions] == [None] * 6
