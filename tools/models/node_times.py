"""Each convolution of an architecture on its own: onnxruntime's node against our kernel's
(the ConvTranspose that placement.normalized makes of a stride-1 Conv), in isolated
alternated blocks: which layers of a whole model win and which lose.

    python tools/models/node_times.py encodec-decoder [ROUNDS]
"""
import sys, time, warnings, collections, numpy as np, onnx, onnxruntime
import conv1d_transpose as ct
from conv1d_transpose import architectures, model_bench
from conv1d_transpose.runtime import placement
name = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
original = architectures.build(name)
m = placement.normalized(original)
types = placement.value_types(m)
feeds = model_bench.feeds_for(original, {})
rng = np.random.default_rng(0)
def med(f, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3
rows, totals = [], collections.defaultdict(float)
on = {i for i, n in enumerate(m.graph.node) if placement.kernel_refusal(n, m, types) is None}
for index in sorted(on):
    node = m.graph.node[index]
    seg = placement.Segment(True, [index], [node], [node.input[0]], [node.output[0]])
    sub = placement.segment_model(m, seg, types)
    x = rng.standard_normal(placement.static_shape(types[node.input[0]])).astype(np.float32)
    so = onnxruntime.SessionOptions(); so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ort = onnxruntime.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tvm = ct.InferenceSession(sub, backend="tvm")
    feed = {node.input[0]: x}
    a, b = [], []
    for _ in range(rounds):
        time.sleep(0.05); ort.run(None, feed); a.append(med(lambda: ort.run(None, feed), 5))
        time.sleep(0.05); tvm.run(None, feed); b.append(med(lambda: tvm.run(None, feed), 5))
    o, t = float(np.median(a)), float(np.median(b))
    w = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == node.input[1]))
    totals["onnxruntime"] += o; totals["ours"] += t
    rows.append((o / t, o, t, node.name, tuple(x.shape), w.shape,
                 [(a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name in ("strides", "dilations")]))
for r in sorted(rows):
    print(f"{r[0]:5.2f}x  ort {r[1]:7.3f}  ours {r[2]:7.3f}  {r[3][:45]:45s} x{r[4]} w{r[5]} {r[6]}")
print({k: round(v, 2) for k, v in totals.items()})
