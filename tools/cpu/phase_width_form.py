"""The phase width form (compile/kernels/source_phase_width.py) against the kernel a
strided NCW layer gets otherwise (the channel-vectorized kernel, folded where the
lowering folds it, with a tuning record's plan where there is one), and its symbolic-width
build against its static one: kernel ms in interleaved rounds in one process, each
output checked against the float64 reference. The figures behind
schedule_cpu_width.prefers_phase.

    python tools/cpu/phase_width_form.py [ROUNDS]
    SHAPES="64,32,4,2,25600;128,64,8,4,8000,v" python tools/cpu/phase_width_form.py

A shape is `Cin,Cout,K,s,W` (batch 1), padded (K - s) // 2 on each side as HiFi-GAN's
upsamplers are, or not at all with `,v` (EnCodec's, which crop afterwards). By default:
HiFi-GAN V1's last two upsamplers and EnCodec's third at 200 frames, the fourth at 1000,
then fewer and more channels, strides 3 to 16 and one output channel.
"""
import os
import sys

import numpy as np
import tvm

from conv1d_transpose.compile import records
from conv1d_transpose.compile.kernels import (fold_filters, kernel_geometry, pack_filters,
                                              schedule_cpu_width, source_phase_width)
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile.kernels.symbolic_width import REFERENCE_WIDTH, layer_at
from conv1d_transpose.compile.machine import configure_threads
from conv1d_transpose.compile.targets import get_target
from conv1d_transpose.graph.reference import max_error

from kernel_timing import compiled_alone, interleaved_medians

SHAPES = ("128,64,4,2,12800;64,32,4,2,25600;128,64,8,4,8000,v;64,32,4,2,128000;"
          "64,32,8,4,16000;32,16,4,2,51200;64,64,4,2,12800;128,128,4,2,6400;256,128,4,2,6400;"
          "256,256,4,2,1600;128,64,6,3,8000;64,32,10,5,5000;64,32,16,8,3200;128,64,16,8,1600;"
          "16,1,4,2,51200;32,8,8,4,20000;32,2,16,8,6400;32,1,16,8,6400;32,1,32,16,3200")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
print(configure_threads())
target = get_target("host").tvm_target()
dev = tvm.cpu(0)
rng = np.random.default_rng(0)

print(f"{'Cin':>4} {'Cout':>4} {'K':>2} {'s':>2} {'W':>6}  {'channel':>8} {'phase':>8} "
      f"{'symbolic':>8}  {'gain':>5} {'sym/static':>10}  R V  fold  within tolerance",
      flush=True)
for shape in os.environ.get("SHAPES", SHAPES).split(";"):
    fields = shape.split(",")
    cin, cout, k, s, w = map(int, fields[:5])
    pb = 0 if fields[5:] == ["v"] else (k - s) // 2
    layer = layer_at(Geometry(1, 0, cin, 0, cout, k, s, 1, pb, "NCW", "float32"), k - s - 2 * pb)
    g = layer(w)
    x = rng.standard_normal((1, cin, w)).astype(np.float32)
    f = rng.standard_normal((k, cout, cin)).astype(np.float32)  # TF layout [K, Cout, Cin]
    channel = kernel_geometry(g)
    channel_func, channel_layout, _ = records.tuned_kernel(channel, target)
    phase_func, phase_layout = schedule_cpu_width.build_phase(g, target)
    symbolic_func, symbolic_layout = schedule_cpu_width.build_phase(layer(REFERENCE_WIDTH),
                                                                    target, symbolic=True)
    builds = ((channel_func, pack_filters(np.ascontiguousarray(fold_filters(f, channel)),
                                          channel_layout)),
              (phase_func, source_phase_width.pack_filters(f, phase_layout)),
              (symbolic_func, source_phase_width.pack_filters(f, symbolic_layout)))
    kernels, right = [], []
    for func, packed in builds:
        lib = compiled_alone(func, target)
        args = [tvm.runtime.tensor(x, dev), tvm.runtime.tensor(packed, dev),
                tvm.runtime.empty(g.output_shape, "float32", dev)]
        lib["main"](*args)
        right.append(max_error(args[2].numpy(), x, f, g)[1])
        kernels.append((lib.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=40),
                        args))
    a, b, c = interleaved_medians(kernels, rounds)
    print(f"{cin:4d} {cout:4d} {k:2d} {s:2d} {w:6d}  {a * 1e3:8.3f} {b * 1e3:8.3f} "
          f"{c * 1e3:8.3f}  {a / b:5.2f} {c / b:10.3f}  {phase_layout.rows} "
          f"{phase_layout.vectors}  {channel.folded_stride:4d}  {right}", flush=True)
