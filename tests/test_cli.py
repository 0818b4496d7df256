"""The command line: each verb from the shell's point of view (click's runner)."""
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from conv1d_transpose.cli import main
from conv1d_transpose.graph import max_error, spec_from_model

LAYER = ["--width", "12", "--cin", "8", "--cout", "4", "--kernel", "4", "--stride", "2"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_demo_on_a_small_layer_checks_and_times_it():
    result = invoke("demo", *LAYER, "--calls", 3)
    assert result.exit_code == 0, result.output
    assert "custom" in result.output and "OK" in result.output and "FAIL" not in result.output


@pytest.mark.parametrize("flags", [[], ["--portable"], ["--dynamic-batch", "--dynamic-width"],
                                   ["--function"], ["--filters-input"]])
def test_export_writes_a_valid_model(tmp_path, flags):
    path = tmp_path / "layer.onnx"
    result = invoke("export", *LAYER, *flags, "-o", path)
    assert result.exit_code == 0, result.output
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert spec_from_model(model).in_width == 12


def test_export_a_workload_by_name(tmp_path):
    result = invoke("export", "--workload", "stream-chunk", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0 and "stream-chunk" in result.output


@pytest.mark.parametrize("args, words", [
    (["export", "--width", "3", "-o", "x.onnx"], ["--cin", "--stride"]),
    (["export", "--workload", "nope", "-o", "x.onnx"], ["'nope'", "hifigan-up1"]),
    (["export", *LAYER, "--padding", "FULL", "-o", "x.onnx"], ["padding='FULL'"]),
    (["export", *LAYER, "--out-width", "30", "--dynamic-width", "-o", "x.onnx"], ["out", "allowed widths"]),
    (["compile", "missing.onnx", "-o", "out"], ["missing.onnx"]),
])
def test_mistakes_are_one_line_errors_with_exit_code_2(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output, result.output


def test_targets_lists_build_and_run_capabilities():
    result = invoke("targets")
    assert result.exit_code == 0
    for name in ("host", "cuda-sm90", "arm64", "rpi4", "jetson-orin", "x86-avx2"):
        assert name in result.output
    assert "runs (this CPU)" in result.output


def test_compile_then_run_from_the_shell(tmp_path):
    model_path, artifact, x_path, y_path = (tmp_path / n for n in ("m.onnx", "art", "x.npy", "y.npy"))
    assert invoke("export", *LAYER, "-o", model_path).exit_code == 0
    result = invoke("compile", model_path, "--target", "host", "-o", artifact)
    assert result.exit_code == 0, result.output
    assert "scheduled polyphase" in result.output
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["target"]["kind"] == "llvm"
    model = onnx.load(model_path)
    spec = spec_from_model(model)
    x = np.random.default_rng(0).standard_normal(spec.input_shape).astype(np.float32)
    np.save(x_path, x)
    result = invoke("run", artifact, "--input", x_path, "--output", y_path)
    assert result.exit_code == 0, result.output
    weights = onnx.numpy_helper.to_array(model.graph.initializer[0]).transpose(2, 1, 0)
    error, ok = max_error(np.load(y_path), x, weights, spec)
    assert ok, error


def test_tune_trials_without_xgboost_fail_before_any_work(monkeypatch):
    """The `tune` extra's cost model is checked first, with the install hint."""
    import sys as _sys

    monkeypatch.setitem(_sys.modules, "xgboost", None)  # an import of it raises ImportError
    result = CliRunner().invoke(main, ["tune", "--workload", "stream-chunk", "--trials", "8"])
    assert result.exit_code == 2
    assert "pip install 'conv1d-transpose[tune]'" in result.output
    assert "tuning 1 layer" not in result.output  # nothing was searched
