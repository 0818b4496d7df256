"""Placement measured per segment (issue 29): under auto each TVM segment of a split is
timed against the same nodes on onnxruntime when the session opens, and kept only where
it is faster; the nodes given back join their onnxruntime neighbours in one session.

The timer is replaced by one that says who won (machines are noisy: no test here asserts a
timing), except in the tests of `segment_times` itself, which use a fake clock."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import conv1d_transpose as ct
from conv1d_transpose.runtime import BackendFallbackWarning, placement, segment_timing, \
    split_session

RNG = np.random.default_rng(291)


def weight(name, *shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)


def three_layers(width=10, c=6, free_gain=False):
    """Conv -> act -> ConvTranspose (x2) -> act -> Conv -> act, NCW as torch exports it:
    three TVM segments (`conv_a`, `up`, `conv_b`, each reading one input: `x`, `a1`, `b1`)
    between onnxruntime ones. `free_gain`: the output scaled by a second input of free
    length (which takes nothing from our kernel's nodes)."""
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1]),
        helper.make_node("LeakyRelu", ["a"], ["a1"], name="act_a", alpha=0.1),
        helper.make_node("ConvTranspose", ["a1", "wu", "bu"], ["b"], name="up", strides=[2],
                         pads=[1, 1]),
        helper.make_node("LeakyRelu", ["b"], ["b1"], name="act_b", alpha=0.1),
        helper.make_node("Conv", ["b1", "wb"], ["c"], name="conv_b", pads=[2, 2],
                         kernel_shape=[5]),
        helper.make_node("Tanh", ["c"], ["y"], name="out"),
    ]
    inits = [weight("wa", c, 3, 3), weight("ba", c), weight("wu", c, c, 4), weight("bu", c),
             weight("wb", 2, c, 5)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, width])]
    if free_gain:
        nodes[-1].output[0] = "t"
        nodes.append(helper.make_node("Mul", ["t", "gain"], ["y"], name="scale"))
        inputs.append(helper.make_tensor_value_info("gain", TensorProto.FLOAT, ["g"]))
    graph = helper.make_graph(
        nodes, "three", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2 * width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def rig(monkeypatch, tvm_wins_on, calls=None, whole_wins=False):
    """Replace the timer: a segment whose inputs include one of `tvm_wins_on` is faster on
    TVM (1 s against 2), every other one on onnxruntime (3 s against 2). The first split
    (every kernel with the ops around it, unmeasured) loses to onnxruntime alone unless
    `whole_wins`, so that the segments are timed; the split after that wins."""
    splits = []

    def rigged(sessions, feeds, **kwargs):
        if calls is not None:
            calls.append((set(sessions), dict(feeds)))
        if set(sessions) == {"split", "alone"}:
            splits.append(1)
            first_loses = len(splits) == 1 and not whole_wins
            return {"split": 3.0 if first_loses else 1.0, "alone": 2.0}
        assert set(sessions) == {"tvm", "onnxruntime"}
        return {"tvm": 1.0 if set(feeds) & set(tvm_wins_on) else 3.0, "onnxruntime": 2.0}

    monkeypatch.setattr(split_session, "median_times", rigged)


def onnxruntime_answer(model, feeds, outputs=None):
    """The model's outputs, or the values named `outputs`, as onnxruntime computes them."""
    if outputs is not None:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                  for name in outputs)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(outputs, feeds)


def test_a_segment_slower_on_tvm_goes_back_and_its_neighbours_merge(monkeypatch, tmp_path):
    rig(monkeypatch, tvm_wins_on={"a1"})
    model = three_layers()
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    # The kernel kept, with the activations on either side of it (they read or feed only
    # TVM values), between the two convolutions given back.
    assert session.placement == {
        "conv_a": "onnxruntime:cpu", "act_a": "tvm:host", "up": "tvm:host",
        "act_b": "tvm:host", "conv_b": "onnxruntime:cpu", "out": "onnxruntime:cpu"}
    assert session.backend == "tvm:host+onnxruntime:cpu"
    why = "measured faster on onnxruntime:cpu: 2e+03 ms a call against 3e+03 ms on tvm:host"
    assert session.placement_reasons == {"conv_a": why, "conv_b": why}
    # Three parts: [conv_a] [act_a, up, act_b] [conv_b, out].
    parts = session._session._parts
    assert [type(part).__name__ for _, _, part in parts] == [
        "OnnxRuntimeSession", "TVMSession", "OnnxRuntimeSession"]
    assert [(inputs, outputs) for inputs, outputs, _ in parts] == [
        (["x"], ["a"]), (["a"], ["b1"]), (["b1"], ["y"])]
    x = RNG.standard_normal((1, 3, 10)).astype(np.float32)
    [y] = session.run(None, {"x": x})
    np.testing.assert_allclose(y, onnxruntime_answer(model, {"x": x})[0], rtol=1e-4,
                               atol=1e-5)


def test_segments_that_win_stay_on_tvm_and_nothing_is_given_back(monkeypatch, tmp_path):
    rig(monkeypatch, tvm_wins_on={"x", "a1", "b1"})
    session = ct.InferenceSession(three_layers(), backend="auto", cache_dir=tmp_path)
    assert set(session.placement.values()) == {"tvm:host"}
    assert session.placement_reasons == {}
    assert len(session._session._parts) == 1


def test_a_split_that_wins_whole_is_built_once_and_no_segment_is_timed(monkeypatch,
                                                                       tmp_path):
    """Every kernel with the ops around it on TVM, measured against onnxruntime alone
    and kept: no segment is built or timed on its own."""
    calls = []
    rig(monkeypatch, tvm_wins_on=set(), calls=calls, whole_wins=True)
    session = ct.InferenceSession(three_layers(), backend="auto", cache_dir=tmp_path)
    assert [names for names, _ in calls] == [{"split", "alone"}]
    assert set(session.placement.values()) == {"tvm:host"}
    assert session.backend == "tvm:host" and len(session._session._parts) == 1


def test_every_segment_slower_leaves_one_onnxruntime_session(monkeypatch, tmp_path):
    rig(monkeypatch, tvm_wins_on=set())
    model = three_layers()
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert set(session.placement.values()) == {"onnxruntime:cpu"}
    assert session.backend == "onnxruntime:cpu"
    assert set(session.placement_reasons) == {"conv_a", "up", "conv_b"}
    assert len(session._session._parts) == 1
    x = RNG.standard_normal((1, 3, 10)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0],
                               onnxruntime_answer(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_each_segment_is_timed_on_what_the_model_feeds_it(monkeypatch, tmp_path):
    """Its inputs are the values the model's own (sample) feeds give it on the way
    through, not random arrays: an activation's output is never negative-heavy, say."""
    calls = []
    rig(monkeypatch, tvm_wins_on={"x", "a1", "b1"}, calls=calls)
    model = three_layers()
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    timed = {next(iter(feeds)): feeds for names, feeds in calls if "tvm" in names}
    assert set(timed) == {"x", "a1", "b1"}
    x = split_session.sample_feeds(session.get_inputs())
    a1, b1 = onnxruntime_answer(model, x, ["a1", "b1"])
    np.testing.assert_array_equal(timed["x"]["x"], x["x"])
    np.testing.assert_allclose(timed["a1"]["a1"], a1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(timed["b1"]["b1"], b1, rtol=1e-4, atol=1e-5)


def test_a_model_with_a_free_dimension_is_not_timed(monkeypatch, tmp_path):
    """Its split is kept as it is (random feeds need every shape): as before."""
    calls = []
    rig(monkeypatch, tvm_wins_on=set(), calls=calls)
    model = three_layers(free_gain=True)
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert calls == []
    assert [name for name, backend in session.placement.items() if backend == "tvm:host"] \
        == ["conv_a", "act_a", "up", "act_b", "conv_b", "out"]
    x = RNG.standard_normal((1, 3, 10)).astype(np.float32)
    gain = np.array([0.5], np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x, "gain": gain})[0],
                               onnxruntime_answer(model, {"x": x, "gain": gain})[0],
                               rtol=1e-4, atol=1e-5)


def test_a_failed_build_is_a_placement_reason(monkeypatch):
    from conv1d_transpose.graph.errors import BackendError
    from conv1d_transpose.runtime import session as session_module

    def failing(sub, *args, **kwargs):
        if "up" in {node.name for node in sub.graph.node}:
            raise BackendError("the build broke")
        return real(sub, *args, **kwargs)

    real = session_module._tvm_session
    rig(monkeypatch, tvm_wins_on={"x", "a1", "b1"})
    monkeypatch.setattr(session_module, "_tvm_session", failing)
    with pytest.warns(BackendFallbackWarning, match="'up' run on onnxruntime"):
        session = ct.InferenceSession(three_layers(), backend="auto")
    assert session.placement_reasons == {"up": "the build broke"}
    assert session.placement["up"] == "onnxruntime:cpu"


def test_a_real_decoder_keeps_its_conv_transposes_and_merges_the_rest(monkeypatch, tmp_path):
    """EnCodec's decoder (reduced), its segments' timings rigged: every ConvTranspose
    faster on TVM, every stride-1 Conv slower. Each ConvTranspose runs on TVM with the ops
    around it that only it reads or feeds, between onnxruntime runs, and the answer is
    onnxruntime's."""
    from conv1d_transpose import architectures

    model = architectures.reduced("encodec-decoder")
    kinds = {node.name: node.op_type for node in model.graph.node}

    def rigged(parts, feeds, open_onnxruntime, times, **kwargs):
        return {position: {"tvm": 1.0 if any(kinds.get(node.name) == "ConvTranspose"
                                             for node in segment.nodes) else 3.0,
                           "onnxruntime": 2.0}
                for position, (segment, _) in enumerate(parts) if segment.on_tvm}

    rig(monkeypatch, tvm_wins_on=set())  # (the whole-model guard: the split wins)
    monkeypatch.setattr(segment_timing, "segment_times", rigged)
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    on_tvm = {name for name, backend in session.placement.items() if backend == "tvm:host"}
    assert {kinds[name] for name in on_tvm} <= {"ConvTranspose", "Elu", "Slice", "Pad", "Add"}
    assert {name for name in on_tvm if kinds[name] == "ConvTranspose"} == \
        {name for name, kind in kinds.items() if kind == "ConvTranspose"}
    assert set(session.placement_reasons) == {n for n, kind in kinds.items() if kind == "Conv"}
    # Each ConvTranspose with the Elu before it and the Slice after it: four TVM parts
    # between onnxruntime ones.
    parts = session._session._parts
    assert [type(part).__name__ for _, _, part in parts].count("TVMSession") == 4
    assert len(parts) == 9
    feeds = split_session.sample_feeds(session.get_inputs(), seed=1)
    [got], [expected] = session.run(None, feeds), onnxruntime_answer(model, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-4,
                               atol=1e-4 * float(np.abs(expected).max()))


# --- segment_times on its own, with a fake clock -------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Fake:
    """A session whose every call takes `cost` seconds of the fake clock, and returns its
    input plus one as each output."""

    def __init__(self, clock, cost, outputs):
        self.clock, self.cost, self.outputs, self.calls = clock, cost, outputs, 0

    def run(self, names, feeds):
        self.clock.now += self.cost
        self.calls += 1
        value = next(iter(feeds.values())) + 1
        return [value for _ in (names or self.outputs)]


def chain(clock, costs):
    """Parts t0 o1 t2 o3 ... (TVM at even positions), each reading the previous output."""
    parts = []
    for position, cost in enumerate(costs):
        inputs, outputs = [f"v{position}"], [f"v{position + 1}"]
        segment = placement.Segment(position % 2 == 0, [position], [], inputs, outputs)
        parts.append((segment, Fake(clock, cost, outputs)))
    return parts


def test_segment_times_measures_the_costliest_segments_first_within_the_budget():
    clock = Clock()
    parts = chain(clock, [1.0, 0.1, 5.0, 0.1, 3.0])
    seen = []

    def times(sessions, feeds, budget_s, pause_s):
        seen.append((next(iter(feeds)), feeds[next(iter(feeds))]))
        clock.now += 4.0  # what measuring one segment costs, say
        return {"tvm": 1.0, "onnxruntime": 2.0}

    def open_onnxruntime(segment):
        return object()

    def measure(budget_s):
        clock.now = 0.0
        seen.clear()
        return list(segment_timing.segment_times(parts, {"v0": 0.0}, open_onnxruntime,
                                                 times, budget_s=budget_s, clock=clock))

    # The runs through: every part once (9.2 s), then each TVM one once (9 s): 18.2 s.
    assert measure(18.0) == []
    # Then position 2 (5 s a call), ending at 22.2 s: past 20, so nothing more.
    assert measure(20.0) == [2]
    assert measure(23.0) == [2, 4]
    assert measure(100.0) == [2, 4, 0]
    # Each on its own inputs: v2 is v0 + 2 after two parts.
    assert seen == [("v2", 2.0), ("v4", 4.0), ("v0", 0.0)]


def test_segment_times_skips_a_segment_onnxruntime_cannot_load():
    clock = Clock()
    parts = chain(clock, [1.0, 0.1, 2.0])

    def open_onnxruntime(segment):
        if segment.indices == [2]:
            raise RuntimeError("onnxruntime cannot load it")
        return object()

    measured = segment_timing.segment_times(
        parts, {"v0": 0.0}, open_onnxruntime,
        lambda sessions, feeds, **kwargs: {"tvm": 1.0, "onnxruntime": 2.0},
        budget_s=100.0, clock=clock)
    assert list(measured) == [0]
