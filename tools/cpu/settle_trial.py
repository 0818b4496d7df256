"""What the bench's settling (bench.FULL["settle_s"]) is for: tvm:host and onnxruntime
on one layer, interleaved as the bench does it (a 0.25 s pause before each library's
batch of 10 timed calls), with torch and TensorFlow in the rotation, after SETTLE seconds
of untimed calls (at least one call).

    python tools/cpu/settle_trial.py WORKLOAD SETTLE [ROUNDS]   (e.g. stream-chunk 0 / 0.02)

Prints each library's median and p10 ms, and tvm's median for the first timed call of a
batch against calls 6-10. Used for the settle_s comment in bench.py and docs/design/cpu-kernels.md.
"""
import sys
import time

import numpy as np

from conv1d_transpose import bench, peers
from conv1d_transpose.workloads import find_workload

BATCH, PAUSE_S, THREADS = 10, 0.25, 2


def batch(runner, x, settle_s):
    time.sleep(PAUSE_S)
    settled = time.perf_counter() + settle_s
    runner.call(x)
    while time.perf_counter() < settled:
        runner.call(x)
    times = []
    for _ in range(BATCH):
        start = time.perf_counter()
        runner.call(x)
        times.append(time.perf_counter() - start)
    return times


def main():
    name, settle_s = sys.argv[1], float(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    w = find_workload(name)
    spec, (x, f) = w.spec(), w.arrays()
    tvm = bench.RUNNERS["tvm"](spec, f, THREADS, "host")
    others = {"onnxruntime": bench.RUNNERS["onnxruntime"](spec, f, THREADS, "cpu"),
              "torch": peers.torch_runner(spec, f, THREADS),
              "tensorflow": peers.tensorflow_runner(spec, f, THREADS)}
    times = {"tvm": [], **{key: [] for key in others}}
    for _ in range(rounds):
        times["tvm"] += batch(tvm, x, settle_s)
        for key, runner in others.items():
            times[key] += batch(runner, x, settle_s)
    for key in ("tvm", "onnxruntime"):
        ms = np.array(times[key]) * 1e3
        print(f"{key}: median {np.median(ms):.3f} p10 {np.percentile(ms, 10):.3f} ms")
    per_batch = np.array(times["tvm"]).reshape(rounds, BATCH) * 1e3
    print(f"tvm: first timed call of a batch {np.median(per_batch[:, 0]):.3f} ms, "
          f"calls 6-10 {np.median(per_batch[:, 5:]):.3f} ms")


if __name__ == "__main__":
    main()
