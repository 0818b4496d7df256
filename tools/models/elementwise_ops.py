"""Elementwise ops on one [1, 128, 3200] float32 tensor: TVM's default CPU lowering, the
same after FastMathTransform, and onnxruntime, one process, median of 100 calls: the
figures behind placement.TVM_ELEMENTWISE and compile/build.py's FastMathTransform
(docs/design/placement.md).

    python tools/models/elementwise_ops.py
"""
import time, numpy as np, tvm, onnxruntime
from onnx import helper, TensorProto
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from conv1d_transpose.compile.targets import get_target
shape = [1, 128, 3200]
target = get_target("host").tvm_target()
x = (np.random.default_rng(0).standard_normal(shape) * 4).astype("float32")
y = np.random.default_rng(1).standard_normal(shape).astype("float32")
cases = {"leaky+add": [helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.1),
                       helper.make_node("Add", ["a", "y"], ["out"])],
         "tanh": [helper.make_node("Tanh", ["x"], ["out"])],
         "elu": [helper.make_node("Elu", ["x"], ["out"])]}
def timed(f):
    f(); t = time.perf_counter()
    for _ in range(100): f()
    return (time.perf_counter() - t) / 100 * 1e3
for name, nodes in cases.items():
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "y")],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mod = from_onnx(m, keep_params_in_input=False)
    row = []
    for label, module in (("tvm default", mod), ("tvm fast math", relax.transform.FastMathTransform()(mod))):
        vm = relax.VirtualMachine(tvm.compile(module, target=target), tvm.cpu())
        args = [tvm.runtime.tensor(x), tvm.runtime.tensor(y)]
        row.append(f"{label} {timed(lambda: vm['main'](*args)):.3f} ms")
    s = onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    row.append(f"onnxruntime {timed(lambda: s.run(None, {'x': x, 'y': y})):.3f} ms")
    print(f"{name:10s} " + "; ".join(row))
