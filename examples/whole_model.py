"""A whole vocoder under `backend='auto'`: which node runs where, and how fast.

Builds one of the architectures in conv1d_transpose/architectures.py (HiFi-GAN V1, the
EnCodec decoder, a Demucs v2 decoder, tf2onnx's Keras vocoder; random weights, their
published hyperparameters), saves it as ONNX, opens it with `auto` (per-node placement:
ConvTranspose and stride-1 Conv on TVM where that measures faster, the rest on
onnxruntime), checks the output against onnxruntime's and times both.

    python examples/whole_model.py [--model hifigan-v1] [--reduced] [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
import warnings

import numpy as np
import onnx
import onnxruntime

import conv1d_transpose as ct
from conv1d_transpose import architectures


def median_ms(run, calls=5):
    run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="keras-tf2onnx-vocoder",
                        choices=sorted(architectures.ARCHITECTURES))
    parser.add_argument("--reduced", action="store_true", help="the small test-size version")
    parser.add_argument("--out-dir", default=tempfile.mkdtemp())
    args = parser.parse_args()

    model = (architectures.reduced if args.reduced else architectures.build)(args.model)
    path = os.path.join(args.out_dir, f"{args.model}.onnx")
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim])
             .astype(np.float32) for v in model.graph.input}
    print(f"{args.model}: {len(model.graph.node)} nodes, saved to {path}")

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = ct.InferenceSession(path, backend="auto")
    print(f"auto opened in {time.perf_counter() - start:.1f} s: {session.backend}")
    for warning in caught:
        print(f"  note: {str(warning.message).splitlines()[0]}")
    counts = collections.Counter(session.placement.values())
    print("placement: " + ", ".join(f"{n} nodes on {b}" for b, n in counts.items()))
    kinds = collections.defaultdict(collections.Counter)
    for node in model.graph.node:
        kinds[session.placement[node.name]][node.op_type] += 1
    for backend, ops in kinds.items():
        print(f"  {backend}: " + ", ".join(f"{op} {n}" for op, n in ops.most_common(5)))
    reasons = session.placement_reasons  # nodes our kernel took, given back to onnxruntime
    if reasons:
        name, why = next(iter(reasons.items()))
        print(f"  given back to onnxruntime:cpu: {len(reasons)} nodes, e.g. {name!r}: {why}")

    reference = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    [expected] = reference.run(None, feeds)
    [got] = session.run(None, feeds)
    error = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    ok = got.shape == expected.shape and error <= 1e-4
    print(f"output {got.shape}, max error relative to onnxruntime's peak {error:.1e}: "
          f"{'OK' if ok else 'MISMATCH'}")
    ours = median_ms(lambda: session.run(None, feeds))
    theirs = median_ms(lambda: reference.run(None, feeds))
    print(f"median ms: auto {ours:.2f}, onnxruntime {theirs:.2f} ({theirs / ours:.2f}x; "
          f"one quick measurement: `conv1d-transpose bench --model {path}` measures properly)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
