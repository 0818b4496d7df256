"""A quick whole-model ratio, auto against onnxruntime, for architectures.py's models, with
the session's open time (the first, noisy figures in docs/design/placement.md; the
measured ones come from `conv1d-transpose bench --model`).

    python tools/models/quick_ratio.py [NAME ...]
"""
import time, sys, warnings, collections, numpy as np, onnxruntime
import conv1d_transpose as ct
from conv1d_transpose import architectures as A
names = sys.argv[1:] or ["encodec-decoder", "hifigan-v1", "keras-tf2onnx-vocoder", "encodec-decoder-lstm", "encodec-decoder-weight-norm", "demucs-v2-decoder"]
rng = np.random.default_rng(0)
def med(f, n):
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e3
for name in names:
    m = A.build(name)
    inp = m.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    x = rng.standard_normal(shape).astype(np.float32)
    so = onnxruntime.SessionOptions(); so.intra_op_num_threads=2
    ort = onnxruntime.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    t0=time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = ct.InferenceSession(m, backend="auto", cache_dir="/tmp/cc-models")
    open_s = time.perf_counter()-t0
    feeds = {inp.name: x}
    a = ort.run(None, feeds)[0]; b = s.run(None, feeds)[0]
    err = np.abs(a-b).max()/ (np.abs(a).max()+1e-30)
    ro, rt = [], []
    n = 5 if name.startswith("hifigan") else 10
    for _ in range(3):
        time.sleep(0.3); ort.run(None,feeds); ro.append(med(lambda: ort.run(None,feeds), n))
        time.sleep(0.3); s.run(None,feeds); rt.append(med(lambda: s.run(None,feeds), n))
    o, t = np.median(ro), np.median(rt)
    c = collections.Counter(s.placement.values())
    print(f"{name}: ort {o:.1f} ms auto {t:.1f} ms ratio {o/t:.2f}x relerr {err:.1e} open {open_s:.1f}s backend {s.backend} {dict(c)} warnings {[str(x.message)[:100] for x in w]}", flush=True)
