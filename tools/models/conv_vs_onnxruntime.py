"""One stride-1 Conv layer: onnxruntime's Conv against our kernel on its ConvTranspose rewrite
(compile/forward_conv.py), in isolated alternated blocks; the figures in
docs/design/placement.md ("Stride-1 Conv on our kernel").

    python tools/models/conv_vs_onnxruntime.py
"""
import time, numpy as np, onnx, onnxruntime, warnings
from onnx import helper, numpy_helper, TensorProto
import conv1d_transpose as ct
from conv1d_transpose.compile.forward_conv import as_conv_transpose
rng = np.random.default_rng(0)
def conv_model(c_in, c_out, K, d, W):
    w = numpy_helper.from_array((rng.standard_normal((c_out, c_in, K))*0.1).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(c_out, np.float32), "b")
    p = (K-1)*d//2
    node = helper.make_node("Conv", ["x","w","b"], ["y"], name="c", dilations=[d], pads=[p,p], kernel_shape=[K])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1,c_in,W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1,c_out,W])], [w,b])
    return helper.make_model(g, opset_imports=[helper.make_operatorsetid("",17)]), {"w": w, "b": b}, node
def med(f, n):
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e3
for c, K, d, W in [(256,3,1,400),(256,11,5,400),(128,3,1,3200),(128,7,3,3200),(64,11,5,6400),(32,3,1,12800),(32,7,1,12800),(512,7,1,50)]:
    m, ws, node = conv_model(c, c, K, d, W)
    new, t = as_conv_transpose(node, ws, W)
    g = helper.make_graph([new], "g", list(m.graph.input), list(m.graph.output), [t, ws["b"]])
    mt = helper.make_model(g, opset_imports=[helper.make_operatorsetid("",17)])
    so = onnxruntime.SessionOptions(); so.intra_op_num_threads=2
    ort = onnxruntime.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    tvm = ct.InferenceSession(mt, backend="tvm")
    x = rng.standard_normal((1,c,W)).astype(np.float32)
    a = ort.run(None, {"x": x})[0]; b_ = tvm.run(None, {"x": x})[0]
    err = np.abs(a-b_).max()
    ro, rt = [], []
    for _ in range(3):
        time.sleep(0.2); ort.run(None,{"x":x}); ro.append(med(lambda: ort.run(None,{"x":x}), 15))
        time.sleep(0.2); tvm.run(None,{"x":x}); rt.append(med(lambda: tvm.run(None,{"x":x}), 15))
    o, tv = np.median(ro), np.median(rt)
    print(f"C{c} K{K} d{d} W{W}: ort {o:.3f} ms tvm {tv:.3f} ms  ratio {o/tv:.2f}x  err {err:.1e} sched {tvm._session.scheduled}", flush=True)
