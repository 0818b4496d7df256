"""`conv1d-transpose bench --model`: whole models checked against onnxruntime, then timed;
and the real architectures under auto: every ConvTranspose on our kernel, onnxruntime's
answer."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
from click.testing import CliRunner

import conv1d_transpose as ct
from conv1d_transpose import architectures
from conv1d_transpose.cli.bench import bench as bench_command


def invoke(*args):
    return CliRunner().invoke(bench_command, [*args], catch_exceptions=False)


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    onnx.save(architectures.reduced("keras-tf2onnx-vocoder"), out / "keras.onnx")
    result = invoke("--model", str(out / "keras.onnx"), "--quick", "--profile",
                    "--cache-dir", str(out / "cache"), "--json", str(out / "models.json"))
    return result, json.loads((out / "models.json").read_text())


def test_a_model_file_is_checked_then_timed_on_auto_and_onnxruntime(keras_run):
    result, document = keras_run
    assert result.exit_code == 0, result.output
    records = {r["backend"]: r for r in document["records"]}
    assert set(records) == {"auto", "onnxruntime:cpu"}
    for record in records.values():
        assert record["status"] == "ok" and record["max_rel_err"] <= 1e-4
        assert record["median_ms"] > 0 and record["p10_ms"] <= record["p90_ms"]
    assert records["onnxruntime:cpu"]["speedup_vs_onnxruntime"] == 1.0
    auto = records["auto"]
    assert auto["speedup_vs_onnxruntime"] == pytest.approx(
        records["onnxruntime:cpu"]["median_ms"] / auto["median_ms"])
    # auto either ran the model on TVM (its 2-D convolutions on our kernel, the ops
    # between them in the same segment), split it, or measured onnxruntime alone faster
    # here; the table says which, and the profile where the time went.
    assert auto["runs_on"] in ("tvm:host", "tvm:host+onnxruntime:cpu", "onnxruntime:cpu")
    assert auto["profile"] and records["onnxruntime:cpu"]["profile"]
    assert {p["part"] for p in records["onnxruntime:cpu"]["profile"]} >= {"ConvTranspose"}
    model = document["header"]["models"][0]
    assert model["name"] == "keras.onnx" and model["ops"]["ConvTranspose"] == 4
    assert "keras.onnx" in result.output and "vs onnxruntime" in result.output


@pytest.mark.parametrize("name, given, note, runs_on", [
    # EnCodec's run-time pads: one static model per input shape.
    ("encodec-decoder", "z=1x16x8", "specialized per input shape (z=1x16x8)",
     ("tvm:host", "tvm:host+onnxruntime:cpu", "onnxruntime:cpu")),
    # Demucs imports as it is: one build for every width, checked at this width's class.
    ("demucs-v2-decoder", "x=1x128x8", "one build for every width",
     ("tvm:host", "onnxruntime:cpu"))])
def test_a_model_with_a_free_time_axis_is_benched_at_the_given_shape(tmp_path, name, given,
                                                                     note, runs_on):
    onnx.save(architectures.reduced(name, dynamic=True), tmp_path / "d.onnx")
    result = invoke("--model", str(tmp_path / "d.onnx"), "--input", given, "--quick",
                    "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "m.json"))
    assert result.exit_code == 0, result.output
    records = {r["backend"]: r for r in json.loads((tmp_path / "m.json").read_text())[
        "records"]}
    auto = records["auto"]
    assert auto["status"] == "ok" and auto["max_rel_err"] <= 1e-4
    assert auto["note"].startswith(note), auto["note"]
    assert auto["runs_on"] in runs_on
    assert sum(auto["placement"].values()) == len(
        architectures.reduced(name, dynamic=True).graph.node)


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "neither an .onnx file nor an architecture"),
    (["--model", "hifigan-v1", "--input", "mel=80xabc"], "must be NAME=SHAPE"),
    (["--model", "hifigan-v1", "--input", "spectrogram=1x80x50"],
     "--input names ['spectrogram'], not inputs of the model"),
])
def test_bad_model_arguments_are_errors_in_words(args, message):
    result = CliRunner().invoke(bench_command, args)
    assert result.exit_code == 2 and message in result.output


def test_a_free_dimension_needs_its_shape(tmp_path):
    from conv1d_transpose.model_bench import feeds_for
    from conv1d_transpose.graph.errors import ArgumentError

    model = architectures.reduced("encodec-decoder")
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "frames"
    with pytest.raises(ArgumentError, match="free dimension: give it, e.g. --input z="):
        feeds_for(model, {})
    assert feeds_for(model, {"z": [1, 16, 5]})["z"].shape == (1, 16, 5)


# --- the real architectures under auto (reduced sizes) ----------------------------------


# Two architectures in the default run (a 2-D tf2onnx graph, and one with an LSTM and
# weight norm's kind of decoder), every one in the slow run: each builds a TVM kernel per
# convolution (HiFi-GAN's reduced form alone has 78).
DEFAULT_RUN = ("keras-tf2onnx-vocoder", "encodec-decoder-lstm")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in DEFAULT_RUN else pytest.mark.slow)
    for n in architectures.ARCHITECTURES])
def test_every_conv_transpose_of_a_real_architecture_runs_on_our_kernel(name, tmp_path,
                                                                        split_kept):
    model = architectures.reduced(name)
    feeds = {}
    rng = np.random.default_rng(0)
    for value in model.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    kinds = {n.name: n.op_type for n in model.graph.node}
    placement = session.placement
    assert set(placement) == set(kinds)
    ups = [n for n, op in kinds.items() if op == "ConvTranspose"]
    assert ups and all(placement[n] == "tvm:host" for n in ups), placement
    stride_1 = [n.name for n in model.graph.node if n.op_type == "Conv"
                and all(list(a.ints) in ([1], [1, 1]) for a in n.attribute if a.name == "strides")]
    assert all(placement[n] == "tvm:host" for n in stride_1)
    for node in model.graph.node:
        if node.op_type == "LSTM":
            assert placement[node.name] == "onnxruntime:cpu"
    expected = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = session.run(None, feeds)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
