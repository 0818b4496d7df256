"""Per-call times of one suite layer through the public API, one backend at a time.

    python tools/cpu/per_call_times.py WORKLOAD BACKENDS THREADS

BACKENDS: comma-separated (tvm, onnxruntime). 200 untimed calls, then 2000 timed ones,
each on its own; prints p10/median/p90 and a histogram (ms). Unlike `bench`, which
interleaves every backend, a layer here runs alone: used for the streaming chunk's
bimodal bench medians (docs/limitations.md).
"""
import sys
import time

import numpy as np

from conv1d_transpose.op import Conv1DTranspose
from conv1d_transpose.workloads import find_workload

w = find_workload(sys.argv[1], None)
spec = w.spec()
x, f = w.arrays()
ops = {b: Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                          spec.dilation, backend=b, threads=int(sys.argv[3]))
       for b in sys.argv[2].split(",")}
for b, op in ops.items():
    for _ in range(200):
        op(x)
    t = []
    for _ in range(2000):
        s = time.perf_counter()
        op(x)
        t.append(time.perf_counter() - s)
    t = np.array(t) * 1e3
    print(b, "p10 %.3f median %.3f p90 %.3f ms" % tuple(np.percentile(t, [10, 50, 90])),
          "hist", np.histogram(t, bins=[0, .15, .2, .25, .3, .35, .4, .5, .7, 1, 100])[0])
