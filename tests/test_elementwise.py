"""The elementwise ops around our kernels fused into one scheduled loop nest
(compile/elementwise.py): one block per fused function (no intermediate buffer), the
outer loops parallel on large tensors, the same answer as onnxruntime, and functions that
are not elementwise left to TVM's default lowering."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import conv1d_transpose as ct

RNG = np.random.default_rng(11)


def blocks_and_parallel(func):
    """(number of blocks, whether a loop is parallel) of a PrimFunc, from its TVMScript."""
    text = func.script()
    return text.count("T.sblock(") - text.count('T.sblock("root")'), "T.parallel(" in text


def bias_act_residual(channels, width):
    """y = LeakyRelu(x + b) + x, NCW: the chain after a vocoder's convolution."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, channels, width), "float32"))
    bias = RNG.standard_normal((1, channels, 1)).astype("float32")
    b = relax.const(bias)
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit(relax.op.add(x, b))
            t = bb.emit(relax.op.nn.leakyrelu(t, 0.1))
            y = bb.emit_output(relax.op.add(t, x))
        bb.emit_func_output(y)
    return bb.get(), bias


@pytest.mark.parametrize("channels, width, parallel", [(64, 4096, True), (4, 16, False)])
def test_a_chain_is_one_loop_nest_parallel_where_large(channels, width, parallel):
    import tvm
    from tvm import relax, tirx

    from conv1d_transpose.compile.elementwise import PARALLEL_ELEMENTS, fuse

    assert (channels * width >= PARALLEL_ELEMENTS) == parallel
    mod, bias = bias_act_residual(channels, width)
    target = tvm.target.Target("llvm")
    fused = fuse(mod, target)
    funcs = [f for _, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert len(funcs) == 1  # three ops, one function
    blocks, parallel_loop = blocks_and_parallel(funcs[0])
    assert blocks == 1  # and one block: the add and the activation are inlined
    assert parallel_loop == parallel
    vm = relax.VirtualMachine(tvm.compile(fused, target=target), tvm.cpu())
    x = RNG.standard_normal((1, channels, width)).astype("float32")
    x[0, 0, :3] = [np.inf, -np.inf, np.nan]
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    t = x + bias
    expected = np.where(t > 0, t, 0.1 * t) + x
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_a_reduction_keeps_tvms_default_lowering():
    import tvm
    from tvm import relax, tirx

    from conv1d_transpose.compile.elementwise import fuse

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((512, 256), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.sum(relax.op.exp(x), axis=1))
        bb.emit_func_output(y)
    fused = fuse(bb.get(), tvm.target.Target("llvm"))
    [func] = [f for _, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert not func.attrs.get("tirx.is_scheduled", False)
    assert "T.parallel(" not in func.script()


def test_a_model_with_elu_and_reflect_pad_matches_onnxruntime(tmp_path, split_kept):
    """EnCodec's pattern: reflect Pad -> Conv -> Elu -> Conv -> Add, on our kernel and
    fused elementwise functions, against onnxruntime (NaN and Inf included)."""
    c, width = 8, 300
    w1 = numpy_helper.from_array(RNG.standard_normal((c, c, 3)).astype(np.float32) * 0.3, "w1")
    w2 = numpy_helper.from_array(RNG.standard_normal((c, c, 1)).astype(np.float32) * 0.3, "w2")
    b1 = numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "b1")
    pads = numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 1], np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"),
             helper.make_node("Conv", ["p", "w1", "b1"], ["a"], name="conv1"),
             helper.make_node("Elu", ["a"], ["e"], name="elu", alpha=1.0),
             helper.make_node("Conv", ["e", "w2"], ["r"], name="conv2"),
             helper.make_node("Add", ["r", "x"], ["y"], name="residual")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c, width])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, c, width])], [w1, w2, b1, pads])
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])
    session = ct.InferenceSession(model, backend="auto", cache_dir=tmp_path)
    assert set(session.placement.values()) == {"tvm:host"}
    x = RNG.standard_normal((1, c, width)).astype(np.float32)
    x[0, 2, 10], x[0, 3, 20] = np.inf, np.nan
    reference = onnxruntime.InferenceSession(model.SerializeToString(),
                                             providers=["CPUExecutionProvider"])
    [expected] = reference.run(None, {"x": x})
    [got] = session.run(None, {"x": x})
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-5)


def test_the_fused_loop_is_vectorized_on_the_host():
    """The innermost loop is left in its plain form for LLVM to vectorize: the host's
    machine code for the chain has packed float instructions and no scalar ones."""
    import re

    import tvm

    from conv1d_transpose.compile.elementwise import fuse
    from conv1d_transpose.compile.targets import get_target

    target = get_target("host").tvm_target()
    mod, _ = bias_act_residual(64, 4096)
    executable = tvm.compile(fuse(mod, target), target=target)
    module = executable.mod.imports[0] if executable.mod.imports else executable.mod
    asm = module.inspect_source("asm")
    if not re.search(r"%[xyz]mm|\bv\d+\.4s\b", asm):
        pytest.skip("host machine code is neither x86 nor aarch64")
    packed = re.findall(r"\bv(?:add|mul|max|cmp\w*|blendm|fmadd\w*)ps\b|\bfmul\s+v\d+\.4s", asm)
    scalar = re.findall(r"\bv(?:add|mul)ss\b", asm)
    assert packed and not scalar, (len(packed), len(scalar))


def test_a_symbolic_batch_is_scheduled_as_a_large_tensor():
    """A free batch (an ONNX dim_param) leaves a loop extent unknown at build time: the
    chain is still one parallel loop nest, and right for any batch."""
    import tvm
    from tvm import relax, tirx

    from conv1d_transpose.compile.elementwise import fuse

    batch = tirx.Var("batch", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, 8, 100), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit(relax.op.nn.leakyrelu(x, 0.2))
            y = bb.emit_output(relax.op.add(t, x))
        bb.emit_func_output(y)
    target = tvm.target.Target("llvm")
    fused = fuse(bb.get(), target)
    [func] = [f for _, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert blocks_and_parallel(func) == (1, True)
    vm = relax.VirtualMachine(tvm.compile(fused, target=target), tvm.cpu())
    for n in (1, 3):
        value = RNG.standard_normal((n, 8, 100)).astype("float32")
        got = vm["main"](tvm.runtime.tensor(value)).numpy()
        np.testing.assert_allclose(got, np.where(value > 0, value, 0.2 * value) + value,
                                   rtol=1e-6)
