"""graph/onnx_export.py: valid models, exact inferred shapes, both forms, both filter modes."""
import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator

import conv1d_transpose as ct
from conv1d_transpose.graph import (DEFAULT_OPSET, FORMS, build_model, make_spec, max_error,
                                    spec_from_model)
from conv1d_transpose.graph.sweeps import random_arrays

SPECS = [
    make_spec((2, 5, 3), (4, 6, 3), (2, 10, 6), 2, "SAME", "NWC"),
    make_spec((1, 3, 7), (5, 2, 3), (1, 2, 28), 3, "VALID", "NCW", 2),
    make_spec((1, 6, 2), (3, 4, 2), (1, 11, 4), 2, "SAME", "NWC", 1, "float16"),
    make_spec((1, 4, 2), (2, 2, 2), (1, 9, 2), 2, "VALID", "NWC", 1, "float64"),
]


def run_onnxruntime(model, feeds):
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("constant_filters", [True, False])
def test_model_is_valid_and_shape_inference_is_exact(spec, form, constant_filters):
    x, f = random_arrays(spec.input_shape, spec.filters_shape, spec.dtype)
    model = build_model(spec, f if constant_filters else None, form=form)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    values = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    dims = [d.dim_value for d in values["output"].type.tensor_type.shape.dim]
    assert dims == list(spec.output_shape)
    # The ConvTranspose's own output is inferred exactly too, not just the declared output.
    conv = next(n for n in model.graph.node if n.op_type == "ConvTranspose")
    if conv.output[0] != "output":
        conv_dims = [d.dim_value for d in values[conv.output[0]].type.tensor_type.shape.dim]
        assert conv_dims == [spec.batch, spec.out_channels, spec.out_width]


@pytest.mark.parametrize("spec", [s for s in SPECS if s.dtype != "float64"], ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("constant_filters", [True, False])
def test_onnxruntime_runs_both_forms_and_both_filter_modes(spec, form, constant_filters):
    x, f = random_arrays(spec.input_shape, spec.filters_shape, spec.dtype)
    model = build_model(spec, f if constant_filters else None, form=form)
    feeds = {"input": x} if constant_filters else {"input": x, "filters": f}
    error, ok = max_error(run_onnxruntime(model, feeds), x, f, spec)
    assert ok, error


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_onnx_reference_evaluator_agrees_on_the_explicit_form(spec):
    # onnx's own reference evaluator gets the output_shape form wrong in some cases
    # (right on 82 of 120 TF configurations); the explicit form is right everywhere.
    x, f = random_arrays(spec.input_shape, spec.filters_shape, spec.dtype)
    y = ReferenceEvaluator(build_model(spec, f, form="explicit")).run(None, {"input": x})[0]
    error, ok = max_error(y, x, f, spec)
    assert ok, error


@pytest.mark.parametrize("opset", [13, DEFAULT_OPSET, 21])
def test_supported_opsets(opset):
    spec = SPECS[0]
    x, f = random_arrays(spec.input_shape, spec.filters_shape, spec.dtype)
    model = build_model(spec, f, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    assert max_error(run_onnxruntime(model, {"input": x}), x, f, spec)[1]


def test_unsupported_opset_and_form_are_refused():
    with pytest.raises(ct.ArgumentError, match="opset=9"):
        build_model(SPECS[0], opset=9)
    with pytest.raises(ct.ArgumentError, match="form='pads'"):
        build_model(SPECS[0], form="pads")


def test_model_carries_names_docs_and_tf_arguments():
    spec = SPECS[1]
    model = build_model(spec, name="decoder/up1")
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["tf.padding"]) == "VALID"
    assert json.loads(props["tf.strides"]) == 3
    assert json.loads(props["tf.dilations"]) == 2
    assert json.loads(props["tf.output_shape"]) == [1, 2, 28]
    assert spec_from_model(model) == spec
    assert all(node.name.startswith("decoder/up1/") for node in model.graph.node)
    assert model.producer_name == "conv1d-transpose" and model.graph.doc_string


def test_layouts_make_the_documented_graphs():
    nwc = [n.op_type for n in build_model(SPECS[0]).graph.node]
    ncw = [n.op_type for n in build_model(SPECS[1]).graph.node]
    assert nwc == ["Transpose", "Transpose", "ConvTranspose", "Transpose"]  # filters input too
    assert ncw == ["Transpose", "ConvTranspose"]
    constant = build_model(SPECS[0], np.ones(SPECS[0].filters_shape, np.float32))
    assert [n.op_type for n in constant.graph.node] == ["Transpose", "ConvTranspose", "Transpose"]
    assert list(constant.graph.initializer[0].dims) == [3, 6, 4]  # [in, out, K]


def test_empty_specs_cannot_be_exported():
    spec = make_spec((1, 4, 2), (0, 3, 2), (1, 8, 3), 2)
    with pytest.raises(ct.ArgumentError, match="kernel width"):
        build_model(spec)


def test_op_save_onnx_round_trips(tmp_path):
    f = np.random.default_rng(1).standard_normal((4, 6, 3)).astype(np.float32)
    op = ct.Conv1DTranspose(f, [2, 10, 6], 2, backend="onnxruntime")
    path = tmp_path / "layer.onnx"
    op.save_onnx(path, form="explicit")
    x = np.random.default_rng(2).standard_normal(op.input_shape).astype(np.float32)
    session = ct.InferenceSession(path, backend="onnxruntime")
    assert session.backend == "onnxruntime:cpu"
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    np.testing.assert_allclose(session.run(None, {"input": x})[0], op(x), rtol=1e-6, atol=1e-6)
