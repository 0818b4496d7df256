"""Per-call latency after idle: how many calls each backend needs to warm up.

    python tools/cpu/warmup.py [WORKLOAD] [IDLE_S] [BLOCKS]

For each backend, BLOCKS times: sleep IDLE_S (the bench's pause is 0.25 s), then 10
calls timed one by one; prints the median of each call position. Used for the
stream-chunk figures in the issue notes (why its bench median swings between runs).
"""
import statistics
import sys
import time

from conv1d_transpose import Conv1DTranspose
from conv1d_transpose.workloads import find_workload

name = sys.argv[1] if len(sys.argv) > 1 else "stream-chunk"
idle = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
blocks = int(sys.argv[3]) if len(sys.argv) > 3 else 20
workload = find_workload(name, None)
spec = workload.spec()
x, f = workload.arrays()
for backend in ("tvm", "onnxruntime"):
    op = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                         spec.dilation, backend=backend, threads=2)
    for _ in range(20):
        op(x)
    positions = [[] for _ in range(10)]
    for _ in range(blocks):
        time.sleep(idle)
        for times in positions:
            start = time.perf_counter()
            op(x)
            times.append(time.perf_counter() - start)
    print(f"{op.backend:16s} ms per call after {idle} s idle: " +
          " ".join(f"{statistics.median(t) * 1e3:.2f}" for t in positions))
