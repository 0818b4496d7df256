"""The whole model on TVM, and single layers as today's TVM segments hold them, with and
without runtime/nwc_inside.py (the figures of "NWC inside a TVM segment" in
docs/design/placement.md). Same process, alternated, median of ROUNDS rounds of 5 calls;
waits (up to 10 min) for a 1-minute load under 1.0 before timing.

    python tools/models/nwc_inside_ratio.py [NAME [SIZES_JSON]]
    e.g. python tools/models/nwc_inside_ratio.py encodec-decoder '{"n_filters": 16}'
"""
import json
import os
import statistics
import sys
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from conv1d_transpose import architectures
from conv1d_transpose.runtime import open_tvm_session
from conv1d_transpose.runtime.nwc_inside import nwc_inside
from conv1d_transpose.runtime.placement import normalized

ROUNDS = int(os.environ.get("ROUNDS", 7))
RNG = np.random.default_rng(0)
# (op, cin, cout, kernel, width, stride): EnCodec n_filters=16 shapes, NCW in and out.
LAYERS = [("Conv", 64, 32, 3, 6000, 1), ("Conv", 32, 32, 1, 24000, 1),
          ("Conv", 256, 128, 3, 1500, 1), ("ConvTranspose", 128, 64, 8, 1500, 4)]


def feeds_of(model):
    return {i.name: RNG.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in model.graph.input}


def layer(op, cin, cout, kernel, width, stride):
    shape = (cout, cin, kernel) if op == "Conv" else (cin, cout, kernel)
    node = helper.make_node(op, ["x", "w", "b"], ["y"], name="layer", kernel_shape=[kernel],
                            strides=[stride], pads=[kernel - stride, 0])
    graph = helper.make_graph(
        [node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array((RNG.standard_normal(shape) * 0.1).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(cout, np.float32), "b")])
    return normalized(helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)]))


def pair(model):
    """(NCW session, NWC session, feeds), checked against each other."""
    ncw, nwc = open_tvm_session(model), open_tvm_session(nwc_inside(model))
    assert ncw.scheduled and nwc.scheduled
    feeds = feeds_of(model)
    a, b = ncw.run(None, feeds)[0], nwc.run(None, feeds)[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))
    return ncw, nwc, feeds


def alternated(ncw, nwc, feeds):
    times = {"ncw": [], "nwc": []}
    for round_ in range(ROUNDS):
        order = [("ncw", ncw), ("nwc", nwc)]
        for label, session in order if round_ % 2 == 0 else order[::-1]:
            time.sleep(0.2)
            session.run(None, feeds)
            block = []
            for _ in range(5):
                start = time.perf_counter()
                session.run(None, feeds)
                block.append(time.perf_counter() - start)
            times[label].append(statistics.median(block))
    return {label: statistics.median(values) * 1e3 for label, values in times.items()}


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "encodec-decoder"
    sizes = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {"n_filters": 16}
    cases = [(f"{name} {sizes}", pair(normalized(architectures.build(name, **sizes))))]
    cases += [(str(spec), pair(layer(*spec))) for spec in LAYERS]
    deadline = time.time() + 600
    while os.getloadavg()[0] >= 1.0 and time.time() < deadline:
        time.sleep(10)
    print(f"load before {os.getloadavg()[0]:.2f}",
          time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
    for label, sessions in cases:
        ms = alternated(*sessions)
        print(f"{label}: NCW {ms['ncw']:.2f} ms, with nwc_inside {ms['nwc']:.2f} ms "
              f"({ms['ncw'] / ms['nwc']:.2f}x)", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
