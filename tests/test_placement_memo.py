"""`auto`'s outcome remembered in the artifact cache (runtime/placement_memo.py): a later
open of the same model on the same machine takes it without timing anything again, and
anything that changes the outcome (threads, the model, CONV1D_TRANSPOSE_REMEASURE)
measures again. The timer is rigged, as in test_segment_placement.py."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

import conv1d_transpose as ct
from conv1d_transpose.runtime import BackendFallbackWarning, placement_memo, split_session
from test_segment_placement import onnxruntime_answer, rig, three_layers


@pytest.fixture(autouse=True)
def remembering(monkeypatch):
    monkeypatch.delenv(placement_memo.ENV_REMEASURE, raising=False)


def no_timing(monkeypatch):
    """A timer that fails the test: nothing may be measured."""
    def refused(sessions, feeds, **kwargs):
        raise AssertionError(f"measured again: {sorted(sessions)}")

    monkeypatch.setattr(split_session, "median_times", refused)


def opened(model, cache_dir, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = ct.InferenceSession(model, backend="auto", cache_dir=cache_dir, **options)
    return session, [str(w.message) for w in caught if w.category is BackendFallbackWarning]


def test_a_measured_split_is_taken_again_without_timing(monkeypatch, tmp_path):
    rig(monkeypatch, tvm_wins_on={"a1"})
    model = three_layers()
    first, _ = opened(model, tmp_path)
    [record_file] = os.listdir(tmp_path / placement_memo.FOLDER)
    record = json.loads((tmp_path / placement_memo.FOLDER / record_file).read_text())
    assert record["choice"] == "split" and record["tvm_nodes"] == ["up"]
    assert record["times"] == {"split": 1.0, "alone": 2.0}

    no_timing(monkeypatch)
    again, _ = opened(model, tmp_path)
    assert again.placement == first.placement
    assert again.placement["up"] == "tvm:host" and again.placement["conv_a"] == \
        "onnxruntime:cpu"
    assert again.placement_reasons == first.placement_reasons != {}
    x = RNG.standard_normal((1, 3, 10)).astype(np.float32)
    np.testing.assert_allclose(again.run(None, {"x": x})[0],
                               onnxruntime_answer(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_onnxruntime_alone_is_taken_again_with_the_measured_times(monkeypatch, tmp_path):
    monkeypatch.setattr(split_session, "median_times", lambda sessions, feeds, **kwargs: {
        "split": 3.0, "alone": 2.0} if "split" in sessions else {"tvm": 1.0,
                                                                 "onnxruntime": 2.0})
    model = three_layers()
    first, _ = opened(model, tmp_path)
    assert first.backend == "onnxruntime:cpu"

    no_timing(monkeypatch)
    again, messages = opened(model, tmp_path)
    assert again.backend == "onnxruntime:cpu"
    [message] = messages
    assert message.startswith("backend='auto' runs this model on onnxruntime:cpu alone: it "
                              "measured 2e+03 ms a call on this machine against 3e+03 ms "
                              "with tvm:host (at ")
    assert "remembered in the artifact cache; CONV1D_TRANSPOSE_REMEASURE=1" in message


@pytest.mark.parametrize("change", ["remeasure", "threads", "model"])
def test_what_changes_the_outcome_measures_again(change, monkeypatch, tmp_path):
    rig(monkeypatch, tvm_wins_on={"a1"})
    opened(three_layers(), tmp_path)
    calls = []
    rig(monkeypatch, tvm_wins_on={"a1"}, calls=calls)
    model, options = three_layers(), {}
    if change == "remeasure":
        monkeypatch.setenv(placement_memo.ENV_REMEASURE, "1")
    elif change == "threads":
        options["threads"] = 1
    else:
        model = three_layers(width=11)
    opened(model, tmp_path, **options)
    assert calls, "nothing was measured"


def test_an_unreadable_record_is_measured_again(monkeypatch, tmp_path):
    rig(monkeypatch, tvm_wins_on={"a1"})
    opened(three_layers(), tmp_path)
    for name in os.listdir(tmp_path / placement_memo.FOLDER):
        (tmp_path / placement_memo.FOLDER / name).write_text("{not json")
    calls = []
    rig(monkeypatch, tvm_wins_on={"a1"}, calls=calls)
    session, _ = opened(three_layers(), tmp_path)
    assert calls and session.placement["up"] == "tvm:host"


RNG = np.random.default_rng(5)
