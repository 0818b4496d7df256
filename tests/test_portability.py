"""The portability matrix (conv1d_transpose/portability.py) on a deterministic subset.

Our two exports are right everywhere they claim to be:
- the default (`output_shape` + SAME_UPPER) on onnxruntime and on our TVM path;
- `portable=True` (explicit pads + output_padding) on every measured consumer.
The whole matrix is `conv1d-transpose portability --full` (docs/design/onnx-export.md,
"Portability matrix").
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools

import pytest

from conv1d_transpose import portability as pm
from conv1d_transpose.graph.sweeps import foundation_sweep

EVERY = 97  # 23 of the sweep's 2160 non-empty cases; every parameter value represented


@pytest.fixture(scope="module")
def cases():
    return pm.sweep_cases(every=EVERY)


def test_subset_covers_the_sweep_parameters(cases):
    specs = [case.spec for case in cases]
    assert len(cases) == 23
    assert {s.kernel_width for s in specs} == set(range(1, 7))
    assert {s.stride for s in specs} == set(range(1, 6))
    assert {s.dilation for s in specs} == {1, 2, 3}
    assert {s.padding for s in specs} == {"SAME", "VALID"}
    assert {s.data_format for s in specs} == {"NWC", "NCW"}
    # Odd total padding (the pixel whose side the forms disagree on) is in the subset.
    assert any((s.pad_begin + s.pad_end) % 2 for s in specs)
    assert any(s.output_padding for s in specs)


def test_sweep_cases_are_the_foundation_sweep_without_empty_tensors():
    def geometry(layer_or_spec):  # everything but the batch and the dtype
        return dataclasses.astuple(layer_or_spec)[1:10]

    expected = [geometry(layer) for layer in foundation_sweep()
                if layer.in_width and layer.kernel_width]
    cases = pm.sweep_cases()
    assert len(cases) == 2160 and [geometry(case.spec) for case in cases] == expected
    assert not any(case.spec.is_empty for case in cases)
    assert {case.spec.batch for case in pm.sweep_cases(every=7)} == {1, 2}


def test_our_exports_are_right_where_they_claim(cases):
    default = pm.measure(cases, forms=["same_upper"], consumers=["onnxruntime", "tvm"],
                         jobs=2)
    onnx_consumers = [c for c in pm.CONSUMER_KEYS if c != "litert"]  # (LiteRT reads no ONNX)
    portable = pm.measure(cases, forms=["explicit"], consumers=onnx_consumers, jobs=2)
    for matrix in (default, portable):
        for (form, consumer), cell in matrix.cells.items():
            assert cell.total == len(cases)
            assert cell.agree == cell.total, (form, consumer, cell.summary(), cell.examples)
    installed = [c for c in onnx_consumers if c != "openvino"
                 or importlib.util.find_spec("openvino")]
    assert portable.counts() == {("explicit", c): "23/23" for c in installed}


def test_forms_that_differ_from_tf_are_measured_as_wrong():
    # A SAME case with an odd total padding: ONNX's NOTSET/SAME_LOWER put the odd pixel
    # first, TF at the end; TVM's raw importer ignores output_shape (wrong width).
    case = next(c for c in pm.sweep_cases()
                if c.spec.padding == "SAME" and (c.spec.pad_begin + c.spec.pad_end) % 2
                and c.spec.out_width != c.spec.in_width * c.spec.stride)
    matrix = pm.measure([case], forms=["notset", "same_lower", "same_upper"],
                        consumers=["onnxruntime", "tvm_raw"])
    assert matrix.all_agree("same_upper", "onnxruntime")
    assert not matrix.all_agree("notset", "onnxruntime")
    assert not matrix.all_agree("same_lower", "onnxruntime")
    assert matrix.cells["same_upper", "tvm_raw"].failures == {"wrong shape": 1}


def test_a_consumer_that_raises_counts_as_wrong(monkeypatch):
    def broken(model, feeds, context):
        raise RuntimeError("no")

    monkeypatch.setattr(pm, "CONSUMERS", pm.CONSUMERS[:1] + (
        pm.Consumer("reference", "broken", broken),) + pm.CONSUMERS[2:])
    cases = pm.sweep_cases(every=400)
    matrix = pm.measure(cases, forms=["explicit"], consumers=["reference"], chunk=3)
    cell = matrix.cells["explicit", "reference"]
    assert (cell.agree, cell.total) == (0, len(cases))
    assert cell.failures == {"raises RuntimeError": len(cases)}


def test_command_prints_the_table_and_writes_markdown(tmp_path):
    from click.testing import CliRunner

    from conv1d_transpose.cli.portability import portability

    markdown, data = tmp_path / "matrix.md", tmp_path / "matrix.json"
    result = CliRunner().invoke(portability, [
        "--every", "300", "--form", "explicit", "--form", "same_upper",
        "--consumer", "onnxruntime", "--consumer", "reference", "--jobs", "1",
        "--markdown", str(markdown), "--json", str(data)])
    assert result.exit_code == 0, result.output
    assert "our TVM path" not in result.output and "onnxruntime" in result.output
    text = markdown.read_text()
    assert text.startswith("| ConvTranspose form | onnxruntime | onnx ReferenceEvaluator |")
    assert "| `pads` + `output_padding` (`portable=True`) | 8/8 | 8/8 |" in text
    assert "every 300th case of the foundation sweep" in text
    import json
    cells = json.loads(data.read_text())["cells"]
    assert len(cells) == 4 and all(c["total"] == 8 for c in cells)


def test_unknown_form_is_an_error():
    with pytest.raises(ValueError, match="unknown forms"):
        pm.measure(pm.sweep_cases(every=1000), forms=["nope"])


def test_forms_build_the_attributes_they_name():
    spec = pm.sweep_cases(every=50)[3].spec
    attributes = {form.key: form.attributes(spec) for form in pm.FORMS}
    assert "auto_pad" not in attributes["notset"]
    assert attributes["same_upper"]["auto_pad"] == "SAME_UPPER"
    assert attributes["same_lower"]["auto_pad"] == "SAME_LOWER"
    for key in ("notset", "same_upper", "same_lower"):
        assert attributes[key]["output_shape"] == [spec.out_width]
    assert attributes["explicit"]["pads"] == [spec.pad_begin, spec.pad_end]
    assert not set(itertools.chain(*[a for k, a in attributes.items() if k != "explicit"])) \
        & {"pads", "output_padding"}


def test_openvino_needs_the_portable_form():
    """Issue 31: OpenVINO's CPU plugin is wrong on the default form (output_shape +
    SAME_UPPER) where SAME's total padding is odd, and right on explicit pads."""
    pytest.importorskip("openvino", reason="openvino is the 'peers' extra (make test "
                                           "installs it)")
    odd = [c for c in pm.sweep_cases() if c.spec.padding == "SAME" and c.spec.in_width > 1
           and (c.spec.pad_begin + c.spec.pad_end) % 2][:12]
    even = [c for c in pm.sweep_cases() if c.spec.padding == "SAME" and c.spec.in_width > 1
            and not (c.spec.pad_begin + c.spec.pad_end) % 2][:6]
    matrix = pm.measure(odd, forms=["same_upper", "explicit"], consumers=["openvino"])
    assert matrix.all_agree("explicit", "openvino")
    assert matrix.cells["same_upper", "openvino"].failures["wrong values"] > 0, \
        matrix.cells["same_upper", "openvino"].summary()
    assert pm.measure(even, forms=["same_upper"], consumers=["openvino"]).all_agree(
        "same_upper", "openvino")


def test_litert_is_a_consumer_whose_verdict_does_not_depend_on_the_form():
    """LiteRT reads no ONNX: each call is converted from TensorFlow, so every form gets
    the same verdict, right except where its TRANSPOSE_CONV cannot take the call."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is the 'peers' extra "
                                                 "(make test installs it)")
    pytest.importorskip("tensorflow", reason="the converter is TensorFlow's ('reference')")
    cases = [c for c in pm.sweep_cases(every=37) if c.spec.dilation == 1][:4]
    dilated = [c for c in pm.sweep_cases(every=37) if c.spec.dilation > 1][:1]
    matrix = pm.measure(cases + dilated, forms=["same_upper", "explicit"],
                        consumers=["litert"])
    for form in ("same_upper", "explicit"):
        cell = matrix.cells[form, "litert"]
        assert (cell.agree, cell.total) == (len(cases), len(cases) + 1), cell.summary()
        assert cell.failures == {"raises Unavailable": 1}
