"""Acceptance: ONNX's own ConvTranspose backend test cases through our compile path.

Raw TVM 0.27 (`relax.frontend.onnx.from_onnx`) passes 10 of these 11 on the host CPU
(TVM ignores output_shape, apache/tvm#19450); with compile/legalize.py in front it must pass all 11.
"""
import warnings

import numpy as np
import pytest

from conv1d_transpose.runtime.tvm_backend import TVMSession

CASES = ("test_convtranspose", "test_convtranspose_1d", "test_convtranspose_3d",
         "test_convtranspose_output_shape", "test_convtranspose_pad",
         "test_convtranspose_kernel_shape", "test_convtranspose_pads",
         "test_convtranspose_dilations", "test_convtranspose_autopad_same",
         "test_convtranspose_group_2", "test_convtranspose_group_2_image_3")


@pytest.fixture(scope="module")
def backend_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # other ops' generators divide by zero on purpose
        warnings.simplefilter("ignore")
        cases = collect_testcases("ConvTranspose")
    return {case.name: case for case in cases if "convtranspose" in case.name}


def test_the_suite_has_the_eleven_cases(backend_cases):
    assert sorted(backend_cases) == sorted(CASES)


def run_cases(case, session_run):
    for inputs, expected in case.data_sets:
        outputs = session_run(inputs)
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            assert got.shape == want.shape, case.name
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=case.name)


@pytest.mark.parametrize("name", CASES)
def test_case_passes_through_our_compile_path(backend_cases, name):
    case = backend_cases[name]
    session = TVMSession(case.model, "host")
    names = [i.name for i in session.get_inputs()]
    run_cases(case, lambda inputs: session.run(None, dict(zip(names, inputs))))


def test_raw_tvm_import_gets_output_shape_wrong(backend_cases):
    # The reason legalize exists (apache/tvm#19450); if a TVM upgrade fixes it, this
    # test says so and the rewrite can be reconsidered.
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    case = backend_cases["test_convtranspose_output_shape"]
    executable = tvm.compile(from_onnx(case.model, keep_params_in_input=False),
                             target=tvm.target.Target({"kind": "llvm"}))
    machine = relax.VirtualMachine(executable, tvm.cpu())
    (inputs, expected), = case.data_sets
    got = machine["main"](*[tvm.runtime.tensor(array) for array in inputs]).numpy()
    assert got.shape == (1, 2, 9, 7) and expected[0].shape == (1, 2, 10, 8)


# -- legalize: any rank, every auto_pad, against onnxruntime ------------------------------

import itertools  # noqa: E402

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conv1d_transpose.compile.legalize import legalize_conv_transpose  # noqa: E402
from conv1d_transpose.graph.errors import ShapeError  # noqa: E402

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
# (input size, kernel, stride, dilation) per axis; kernel < stride and dilation > 1 included
GEOMETRIES = ((3, 3, 2, 1), (4, 2, 3, 1), (3, 1, 2, 1), (5, 3, 1, 2), (2, 4, 2, 1))


def conv_transpose_model(rank, geometry, attributes, bias=False, static=True, seed=0):
    size, kernel, stride, dilation = geometry
    rng = np.random.default_rng(seed)
    sizes = [size + axis for axis in range(rank)]
    dims = [1, 2] + (sizes if static else [f"d{axis}" for axis in range(rank)])
    weight = rng.standard_normal((2, 3) + (kernel,) * rank).astype(np.float32)
    initializers = [numpy_helper.from_array(weight, "W")]
    inputs = ["X", "W"]
    if bias:
        initializers.append(numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B"))
        inputs.append("B")
    node = helper.make_node("ConvTranspose", inputs, ["Y"], name="up", strides=[stride] * rank,
                            dilations=[dilation] * rank, **attributes)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, rng.standard_normal([1, 2] + sizes).astype(np.float32)


def onnxruntime_run(model, x):
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x})[0]


def attribute_cases(rank, geometry):
    size, kernel, stride, dilation = geometry
    full = [(size + axis - 1) * stride + (kernel - 1) * dilation + 1 for axis in range(rank)]
    for auto_pad in AUTO_PADS:
        base = {} if auto_pad == "NOTSET" else {"auto_pad": auto_pad}
        if auto_pad != "NOTSET":
            yield base
        for delta in (-3, -1, 0, 1, stride - 1):
            yield {**base, "output_shape": [max(f + delta, 1) for f in full]}


SWEEP = [(rank, geometry, attributes)
         for rank, geometry in itertools.product((1, 2, 3), GEOMETRIES)
         for attributes in attribute_cases(rank, geometry)]


@pytest.mark.parametrize("rank", (1, 2, 3))
def test_legalize_agrees_with_onnxruntime(rank):
    checked = refused = 0
    for case_rank, geometry, attributes in SWEEP:
        if case_rank != rank:
            continue
        for bias in (False, True):
            model, x = conv_transpose_model(rank, geometry, attributes, bias)
            try:
                want = onnxruntime_run(model, x)
            except onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument:
                # onnxruntime refuses an output_shape wider than stride - 1 extra positions
                with pytest.raises(ShapeError, match="wider"):
                    legalize_conv_transpose(model)
                refused += 1
                continue
            legal = legalize_conv_transpose(model)
            node = next(n for n in legal.graph.node if n.op_type == "ConvTranspose")
            names = {a.name for a in node.attribute}
            assert "output_shape" not in names and "auto_pad" not in names
            assert {"pads", "output_padding"} <= names
            got = onnxruntime_run(legal, x)
            assert got.shape == want.shape, (geometry, attributes)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                       err_msg=str((geometry, attributes)))
            checked += 1
    assert checked >= 150 and refused >= 4


# A few of the sweep's cases through TVM itself: the rewritten node is what TVM honours.
TVM_CASES = [
    (1, (3, 3, 2, 1), {"output_shape": [6], "auto_pad": "SAME_UPPER"}),
    (1, (4, 2, 3, 1), {"output_shape": [10]}),
    (1, (3, 1, 2, 1), {"auto_pad": "SAME_UPPER"}),
    (2, (3, 3, 2, 1), {"output_shape": [6, 9], "auto_pad": "SAME_LOWER"}),
    (2, (5, 3, 1, 2), {"auto_pad": "SAME_LOWER"}),
    (2, (2, 4, 2, 1), {"output_shape": [7, 9], "auto_pad": "VALID"}),
    (3, (3, 3, 2, 1), {"output_shape": [5, 8, 10]}),
    (3, (4, 2, 3, 1), {"auto_pad": "SAME_UPPER"}),
]


@pytest.mark.filterwarnings("ignore:Field 'shape' of 'type' is required")  # Y's shape is left to inference
@pytest.mark.parametrize("rank, geometry, attributes", TVM_CASES)
def test_legalized_tvm_agrees_with_onnxruntime(rank, geometry, attributes):
    model, x = conv_transpose_model(rank, geometry, attributes, bias=True)
    want = onnxruntime_run(model, x)
    got, = TVMSession(model, "host").run(None, {"X": x})
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_output_shape_too_wide_is_refused_like_onnxruntime():
    model, x = conv_transpose_model(1, (3, 3, 2, 1), {"output_shape": [9]})  # full width 7
    with pytest.raises(Exception):
        onnxruntime_run(model, x)
    with pytest.raises(ShapeError, match="'up'.*wider"):
        legalize_conv_transpose(model)


def test_output_shape_needs_static_input_sizes():
    model, _ = conv_transpose_model(2, (3, 3, 2, 1), {"output_shape": [6, 8]}, static=False)
    with pytest.raises(ShapeError, match=r"'up'.*static.*apache/tvm#19450"):
        legalize_conv_transpose(model)
    # SAME_* alone needs no input size: total padding does not depend on it
    model, _ = conv_transpose_model(2, (3, 3, 2, 1), {"auto_pad": "SAME_UPPER"}, static=False)
    legalize_conv_transpose(model)


def test_legalize_does_not_mutate_its_input():
    model, _ = conv_transpose_model(1, (3, 3, 2, 1), {"output_shape": [6], "auto_pad": "SAME_UPPER"})
    before = model.SerializeToString(deterministic=True)
    legal = legalize_conv_transpose(model)
    assert model.SerializeToString(deterministic=True) == before
    assert legal.SerializeToString(deterministic=True) != before


def test_conv_transpose_inside_a_local_function_is_rewritten():
    model, x = conv_transpose_model(1, (3, 3, 2, 1), {"output_shape": [6], "auto_pad": "SAME_UPPER"})
    node = model.graph.node[0]
    function = helper.make_function(
        "local", "Up", ["X", "W"], ["Y"], [helper.make_node(
            "ConvTranspose", ["X", "W"], ["Y"], **{a.name: helper.get_attribute_value(a)
                                                   for a in node.attribute})],
        opset_imports=[helper.make_opsetid("", 17)])
    model.graph.node[0].CopyFrom(helper.make_node("Up", ["X", "W"], ["Y"], domain="local"))
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local", 1))
    legal = legalize_conv_transpose(model)
    conv = next(n for n in legal.graph.node if n.op_type == "ConvTranspose")
    assert {a.name for a in conv.attribute} >= {"pads", "output_padding"}
    np.testing.assert_allclose(onnxruntime_run(legal, x), onnxruntime_run(model, x), rtol=1e-5)
