"""Models with a free time axis (issue 30): specialised per input shape, the shape
arithmetic real exporters write folded away, every ConvTranspose on our kernel, the
specialisations held in a bounded LRU in memory and reused from the artifact cache."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import conv1d_transpose as ct
from conv1d_transpose import architectures
from conv1d_transpose.graph.errors import ArgumentError
from conv1d_transpose.runtime import placement, specialize
from conv1d_transpose.runtime.specialized_session import SPECIALIZATIONS, SpecializedSession

# The dynamic builders with their input's name; each folds to its static twin.
DYNAMIC = {"hifigan-v1": "mel", "encodec-decoder": "z", "encodec-decoder-weight-norm": "z",
           "encodec-decoder-lstm": "z", "demucs-v2-decoder": "x"}
# What torch's exporter writes for shape arithmetic only (in these models): none of it
# may survive.
SHAPE_OPS = {"Shape", "Size", "Gather", "Cast", "Ceil", "ConstantOfShape", "Constant",
             "Concat", "Unsqueeze"}


def onnxruntime_answer(model, feeds):
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def feed(model, frames, seed=0):
    value = model.graph.input[0]
    dims = [d.dim_value or frames for d in value.type.tensor_type.shape.dim]
    return {value.name: np.random.default_rng(seed).standard_normal(dims).astype(np.float32)}


# --- the dynamic builders -----------------------------------------------------------


@pytest.mark.parametrize("name", DYNAMIC)
def test_a_dynamic_builder_computes_what_its_static_twin_does(name):
    model = architectures.reduced(name, dynamic=True)
    onnx.checker.check_model(model, full_check=True)
    assert specialize.free_inputs(model) == {
        DYNAMIC[name]: [d.dim_value or d.dim_param
                        for d in model.graph.input[0].type.tensor_type.shape.dim]}
    assert "time" in specialize.free_inputs(model)[DYNAMIC[name]]
    for frames in (8, 11):
        feeds = feed(model, frames, seed=frames)
        [dynamic] = onnxruntime_answer(model, feeds)
        [static] = onnxruntime_answer(architectures.reduced(name, frames=frames), feeds)
        np.testing.assert_array_equal(dynamic.reshape(static.shape), static)


def test_the_encodec_export_holds_the_padding_arithmetic_tvm_cannot_import():
    """What issue 30 quotes from torch's export: Shape -> Gather -> ... -> Ceil -> ... ->
    Pad, the pads computed at run time."""
    model = architectures.reduced("encodec-decoder", dynamic=True)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["Ceil"] == ops["Pad"] == 14 and ops["Shape"] > ops["Pad"]
    produced = {o: n for n in model.graph.node for o in n.output}
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    assert pad.input[1] in produced  # not an initializer: computed from Shape


# --- specialising (pure ONNX) ---------------------------------------------------------


@pytest.mark.parametrize("name", DYNAMIC)
def test_specializing_folds_every_shape_chain_and_keeps_the_answer(name):
    model = architectures.reduced(name, dynamic=True)
    feeds = feed(model, 9)
    static = specialize.specialized(model, specialize.input_shapes(model, feeds))
    onnx.checker.check_model(static, full_check=True)
    assert not specialize.free_inputs(static)
    assert not {n.op_type for n in static.graph.node} & SHAPE_OPS
    constants = {t.name for t in static.graph.initializer}
    assert all(n.input[1] in constants for n in static.graph.node
               if n.op_type in ("Pad", "Reshape", "Slice"))
    assert all(n.input[2] in constants for n in static.graph.node if n.op_type == "Slice")
    # What is left is the static builder's graph (Demucs keeps its final view), the no-op
    # Pads and Slices of a k1 conv's padding gone, weight norm computed.
    twin = collections.Counter(n.op_type for n in architectures.reduced(
        name.replace("-weight-norm", ""), frames=9).graph.node)
    twin.update(["Reshape"] if name.startswith("demucs") else [])
    assert collections.Counter(n.op_type for n in static.graph.node) == twin
    [expected] = onnxruntime_answer(model, feeds)
    [got] = onnxruntime_answer(static, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert [d.dim_value for d in static.graph.output[0].type.tensor_type.shape.dim] == \
        list(expected.shape)
    assert specialize.specialization(static) == {
        "inputs": {DYNAMIC[name]: list(feeds[DYNAMIC[name]].shape)}}
    # Every node left keeps its name; our kernel takes every ConvTranspose as it stands
    # (and every stride-1 Conv, which `normalized` rewrites as one).
    names = set(placement.node_names(model.graph))
    assert {n.name for n in static.graph.node} <= names
    normalized = placement.normalized(static)
    types = placement.value_types(normalized)
    refusals = [placement.kernel_refusal(n, normalized, types)
                for n in normalized.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert refusals == [None] * sum(n.op_type in ("Conv", "ConvTranspose")
                                    for n in model.graph.node)


def test_the_same_shapes_give_the_same_bytes():
    """The artifact cache keys a model by its bytes: a specialisation made again (in this
    process or the next) must find the artifacts the first one built."""
    model = architectures.reduced("encodec-decoder-weight-norm", dynamic=True)
    shapes = {"z": (1, 16, 10)}
    first = specialize.specialized(model, shapes).SerializeToString(deterministic=True)
    again = specialize.specialized(architectures.reduced("encodec-decoder-weight-norm",
                                                         dynamic=True), shapes)
    assert again.SerializeToString(deterministic=True) == first


def test_our_own_export_drops_the_spec_of_its_exported_width():
    f = np.ones((4, 3, 5), np.float32)
    model = ct.Conv1DTranspose(f, [1, 16, 3], strides=4).to_onnx(dynamic_batch=True,
                                                                  dynamic_width=True)
    static = specialize.specialized(model, {"input": (2, 7, 5)})
    keys = {p.key for p in static.metadata_props}
    assert "conv1d_transpose.spec" not in keys and specialize.SPECIALIZED_KEY in keys
    assert [d.dim_value for d in static.graph.output[0].type.tensor_type.shape.dim] == \
        [2, 28, 3]


@pytest.mark.parametrize("shape, message", [
    ((1, 16), r"input 'z' has shape \(1, 16\); the model takes \[1, 16, 'time'\]"),
    ((1, 15, 9), r"input 'z' has shape \(1, 15, 9\); the model takes \[1, 16, 'time'\]"),
])
def test_a_feed_that_does_not_fit_the_model_is_an_error_in_words(shape, message):
    model = architectures.reduced("encodec-decoder", dynamic=True)
    with pytest.raises(ArgumentError, match=message):
        specialize.input_shapes(model, {"z": np.zeros(shape, np.float32)})
    with pytest.raises(ArgumentError, match=r"feeds lack the model's inputs \['z'\]"):
        specialize.input_shapes(model, {"x": np.zeros(shape, np.float32)})


def test_a_dim_name_shared_by_two_inputs_takes_one_value():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "time"])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 2, "time"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "time"])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "s"], ["y"])], "g", [x, s], [y]))
    with pytest.raises(ArgumentError, match=r"input 's' has shape \(1, 2, 4\).*time=3"):
        specialize.input_shapes(model, {"x": np.zeros((1, 2, 3)), "s": np.zeros((1, 2, 4))})


def lstm_over_time():
    """A free time axis, and no node our kernel could take with it fixed."""
    c = 4
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (1, 4 * c, c)), ("r", (1, 4 * c, c)))]
    nodes = [helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm", hidden_size=c)]
    return helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["time", 1, c])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
        opset_imports=[helper.make_operatorsetid("", 17)])


def test_tf2onnx_unit_height_form_with_a_free_width_waits_on_shapes():
    """Keras' Conv1DTranspose through tf2onnx is 2-D ([N, C, 1, W]); `normalized` makes it
    1-D only once W is static."""
    model = architectures.reduced("keras-tf2onnx-vocoder")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "time"
    del model.graph.value_info[:]
    assert specialize.waits_on_shapes(model)
    static = placement.normalized(specialize.specialized(model, {"x": (1, 11, 16)}))
    types = placement.value_types(static)
    refusals = [placement.kernel_refusal(n, static, types) for n in static.graph.node
                if n.op_type == "ConvTranspose"]
    assert refusals == [None] * 6  # 4 upsamplers and 2 stride-1 Conv, all 1-D now


def test_a_symbolic_batch_alone_keeps_one_artifact_under_tvm():
    """TVM's whole-model build keeps the kernel with a symbolic batch (one artifact for
    every batch): only the per-node placement of `auto` needs it fixed."""
    f = np.ones((4, 3, 5), np.float32)
    model = ct.Conv1DTranspose(f, [1, 16, 3], strides=4).to_onnx(dynamic_batch=True)
    assert specialize.waits_on_shapes(model)
    assert not specialize.waits_on_shapes(model, symbolic_batch=True)
    width = ct.Conv1DTranspose(f, [1, 16, 3], strides=4).to_onnx(dynamic_width=True)
    assert specialize.waits_on_shapes(width, symbolic_batch=True)


def test_only_a_free_dimension_our_kernel_waits_on_is_specialised():
    assert specialize.waits_on_shapes(architectures.reduced("encodec-decoder", dynamic=True))
    assert specialize.waits_on_shapes(architectures.reduced("hifigan-v1", dynamic=True))
    assert not specialize.waits_on_shapes(architectures.reduced("encodec-decoder"))
    assert not specialize.waits_on_shapes(lstm_over_time())
    session = ct.InferenceSession(lstm_over_time(), backend="auto")
    assert session.specialized is None and session.backend == "onnxruntime:cpu"


# --- the LRU of specialisations -------------------------------------------------------


class _Opened:
    """A stand-in for a static session: records what it was opened for."""

    backend = "fake:host"

    def __init__(self, model):
        self.shapes = specialize.specialization(model)["inputs"]

    def run(self, output_names, feeds):
        return [self.shapes]


def test_the_lru_keeps_the_most_recent_shapes_and_evicts_the_oldest():
    model = architectures.reduced("encodec-decoder", dynamic=True)
    opened = []

    def open_static(static):
        opened.append(specialize.specialization(static)["inputs"]["z"][2])
        return _Opened(static)

    session = SpecializedSession(model, open_static, limit=2)
    assert session.placement is None and "no call yet" in session.backend
    for frames in (8, 9, 8, 10, 9, 8):
        [shapes] = session.run(None, feed(model, frames))
        assert shapes == {"z": [1, 16, frames]}
    # 8 and 9 opened; 8 reused; 10 evicts 9 (least recent); 9 reopens evicting 8, ...
    assert opened == [8, 9, 10, 9, 8]
    assert session.specialized == {"inputs": {"z": [1, 16, 8]}, "limit": 2,
                                   "held": [{"z": [1, 16, 9]}, {"z": [1, 16, 8]}]}
    placed = session.placement
    assert set(placed) == set(placement.node_names(model.graph))
    left = len(specialize.specialized(model, {"z": (1, 16, 8)}).graph.node)
    assert collections.Counter(placed.values()) == {
        "fake:host": left, "folded": len(model.graph.node) - left}
    assert SPECIALIZATIONS == SpecializedSession(model, open_static).limit == 8
    with pytest.raises(ArgumentError, match="limit=0 must be a positive int"):
        SpecializedSession(model, open_static, limit=0)


# --- under auto, on our kernel ----------------------------------------------------------


def conv_transposes(model):
    return [n.name for n in model.graph.node if n.op_type == "ConvTranspose"]


@pytest.mark.parametrize("name", [
    "encodec-decoder", "demucs-v2-decoder",
    pytest.param("hifigan-v1", marks=pytest.mark.slow),  # 78 kernels per width
    pytest.param("encodec-decoder-lstm", marks=pytest.mark.slow)])
def test_a_dynamic_architecture_runs_on_our_kernel_at_every_width(name, tmp_path,
                                                                    split_kept):
    """EnCodec's run-time pads stop TVM's importer: one static model per input shape.
    HiFi-GAN and Demucs import with their free axis as it is: one build for every width
    (runtime/symbolic_session.py, tests/test_symbolic_width.py), checked per width class
    under auto."""
    model = architectures.reduced(name, dynamic=True)
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    symbolic = name in ("demucs-v2-decoder", "hifigan-v1")
    if symbolic:
        assert session.specialized is None
    else:
        assert session.specialized == {"inputs": {}, "held": [], "limit": SPECIALIZATIONS}
    for frames in (8, 13):
        feeds = feed(model, frames, seed=frames)
        [got] = session.run(None, feeds)
        [expected] = onnxruntime_answer(model, feeds)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(expected).max()))
        placed = session.placement
        assert set(placed) == set(placement.node_names(model.graph))
        assert all(placed[n] == "tvm:host" for n in conv_transposes(model)), placed
        if symbolic:
            assert session.backend == "tvm:host"
            continue
        assert all(placed[n.name] == "folded" for n in model.graph.node
                   if n.op_type in ("Shape", "Ceil", "ConstantOfShape"))
        # (EnCodec's every op runs on TVM with its kernels once specialised; an LSTM on
        # onnxruntime.)
        assert session.backend == ("tvm:host" if name == "encodec-decoder"
                                   else "tvm:host+onnxruntime:cpu")
        assert session.specialized["inputs"] == {DYNAMIC[name]: list(
            feeds[DYNAMIC[name]].shape)}
    if not symbolic:
        assert len(session.specialized["held"]) == 2
    assert [arg.shape for arg in session.get_inputs()] == [
        [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]]


def cached_artifacts(cache_dir):
    return sorted(name for name in os.listdir(cache_dir)
                  if not name.startswith(".") and name not in ("aliases", "placements"))


def test_a_specialisation_is_built_once_and_reused_from_disk(tmp_path, split_kept,
                                                            count_builds):
    """A fresh session, then a fresh process, with the same cache and shapes builds
    nothing; the artifacts' manifests say which shapes they were specialised to. (EnCodec:
    its run-time pads keep it specialised per shape; Demucs now builds once for every
    width, test_symbolic_width.py.)"""
    model = architectures.reduced("encodec-decoder", dynamic=True)
    path = tmp_path / "encodec-dynamic.onnx"
    onnx.save(model, path)
    cache = tmp_path / "cache"
    feeds = feed(model, 8)
    [(name, x)] = feeds.items()
    ct.InferenceSession(str(path), backend="auto", cache_dir=cache).run(None, feeds)
    built = cached_artifacts(cache)
    assert len(count_builds) == len(built) > 0
    for artifact in built:
        with open(cache / artifact / "manifest.json") as file:
            assert json.load(file)["specialized"] == {"inputs": {name: list(x.shape)}}

    count_builds.clear()
    ct.InferenceSession(str(path), backend="auto", cache_dir=cache).run(None, feeds)
    assert count_builds == []

    script = textwrap.dedent(f"""
        import numpy as np, conv1d_transpose as ct
        from conv1d_transpose.runtime import split_session
        split_session.median_times = lambda s, f, **k: {{"split": 1.0, "alone": 2.0}}
        session = ct.InferenceSession({str(path)!r}, backend="auto", cache_dir={str(cache)!r})
        x = np.random.default_rng(0).standard_normal({tuple(x.shape)!r}).astype(np.float32)
        session.run(None, {{{name!r}: x}})
        print(session.backend)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tvm:host"]
    assert cached_artifacts(cache) == built  # nothing new: the other process built nothing


def test_our_own_dynamic_width_export_runs_the_scheduled_kernel_at_every_width(tmp_path,
                                                                               split_kept):
    """It imports into TVM as it is, and the symbolic-width kernel takes it: one build
    for every width (before, only TVM's unscheduled default lowering took it, and auto
    ran it on onnxruntime)."""
    f = np.random.default_rng(5).standard_normal((4, 3, 5)).astype(np.float32)
    model = ct.Conv1DTranspose(f, [1, 16, 3], strides=4).to_onnx(dynamic_batch=True,
                                                                  dynamic_width=True)
    for backend in ("auto", "tvm"):
        session = ct.InferenceSession(model, backend=backend, cache_dir=tmp_path)
        for batch, width in ((1, 4), (3, 9)):
            x = np.random.default_rng(width).standard_normal((batch, width, 5)).astype(
                np.float32)
            [y] = session.run(None, {"input": x})
            expected = ct.reference_conv1d_transpose(
                x, f, ct.Conv1DTranspose(f, [batch, 4 * width, 3], strides=4).spec)
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
            assert session.backend == "tvm:host" and session._session.scheduled
            assert session.specialized is None

def test_a_shape_already_open_runs_while_another_thread_opens_a_new_one():
    """Opening builds; a call whose specialisation is open does not wait for it. Two
    threads asking for one new shape open it once; a failed open is tried again."""
    import threading

    model = architectures.reduced("encodec-decoder", dynamic=True)
    opened, release, building = [], threading.Event(), threading.Event()

    def open_static(static):
        frames = specialize.specialization(static)["inputs"]["z"][2]
        opened.append(frames)
        if frames == 9:
            building.set()
            assert release.wait(30)
        if frames == 10 and opened.count(10) == 1:
            raise RuntimeError("the first open of 10 fails")
        return _Opened(static)

    session = SpecializedSession(model, open_static)
    session.run(None, feed(model, 8))
    results = []
    slow = [threading.Thread(target=lambda: results.append(session.run(None, feed(model, 9))))
            for _ in range(2)]
    for thread in slow:
        thread.start()
    assert building.wait(30)
    [shapes] = session.run(None, feed(model, 8))  # while 9 is being opened
    assert shapes == {"z": [1, 16, 8]} and not results
    release.set()
    for thread in slow:
        thread.join(30)
    assert [r[0] for r in results] == [{"z": [1, 16, 9]}] * 2
    assert opened == [8, 9]  # 9 opened once for both threads
    with pytest.raises(RuntimeError, match="first open"):
        session.run(None, feed(model, 10))
    [shapes] = session.run(None, feed(model, 10))
    assert shapes == {"z": [1, 16, 10]} and opened == [8, 9, 10, 10]
