"""The width form (compile/kernels/source_width.py) against the channel-vectorized kernel
that a stride-1 NCW layer gets otherwise (a tuning record's plan, else the generic plan),
kernel ms in interleaved rounds in one process: the figures behind
schedule_cpu_width.prefers_width.

    python tools/cpu/width_form.py [ROUNDS]
    SHAPES="32,1,7,12800,1;64,64,3,6400,1" python tools/cpu/width_form.py

A shape is `Cin,Cout,K,W,dilation[,v]` ('same' padding, 'valid' with v; batch 1).
"""
import os
import sys

import numpy as np
import tvm

from conv1d_transpose.compile import records
from conv1d_transpose.compile.kernels import pack_filters
from conv1d_transpose.compile.kernels import schedule_cpu_width as width
from conv1d_transpose.compile.kernels import source_width
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile.targets import get_target

from kernel_timing import interleaved_medians

# HiFi-GAN v1's conv_post and K 3 resblock convs, EnCodec's last conv, 1x1 convs and
# K 3 block convs, and wider layers where the channel form is expected to win.
SHAPES = ("32,1,7,12800,1;32,1,7,24006,1,v;64,64,3,6400,1;64,64,3,6400,3;32,32,3,12800,1;"
          "32,32,3,12800,5;32,16,3,24002,1,v;64,32,3,12002,1,v;128,64,3,3002,1,v;256,128,3,602,1,v;"
          "256,256,3,400,3;32,32,1,24000,1;16,32,1,24000,1;32,64,1,12000,1;64,64,1,12000,1;"
          "64,128,1,3000,1;128,128,1,3000,1;128,256,1,600,1;256,256,1,600,1;"
          "64,64,7,6400,1;128,128,7,3200,1;32,32,11,12800,1")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
target = get_target("host").tvm_target()
dev = tvm.cpu(0)
rng = np.random.default_rng(0)


def executable(func):
    module = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    return tvm.compile(module, target=target).jit()


for shape in os.environ.get("SHAPES", SHAPES).split(";"):
    fields = shape.split(",")
    cin, cout, k, w, d = map(int, fields[:5])
    valid = fields[5:] == ["v"]
    span = (k - 1) * d
    # ConvTranspose pads of a 'same' Conv (pl = span // 2: pb = span - pl) or a 'valid' one.
    pb, pe = (span, span) if valid else (span - span // 2, span // 2)
    g = Geometry(1, w, cin, w + span - pb - pe, cout, k, 1, d, pb, "NCW", "float32")
    x = rng.standard_normal((1, cin, w)).astype(np.float32)
    f = rng.standard_normal((k, cout, cin)).astype(np.float32)  # TF layout [K, Cout, Cin]
    outputs, kernels = [], []
    channel_func, channel_layout, _ = records.tuned_kernel(g, target)
    width_func, width_layout = width.build(g, target)
    for func, packed in ((channel_func, pack_filters(f, channel_layout)),
                         (width_func, source_width.pack_filters(f, width_layout))):
        lib = executable(func)
        args = [tvm.runtime.tensor(x, dev), tvm.runtime.tensor(packed, dev),
                tvm.runtime.empty(g.output_shape, "float32", dev)]
        lib["main"](*args)
        outputs.append(args[2].numpy())
        kernels.append((lib.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=40),
                        args))
    error = float(np.abs(outputs[0] - outputs[1]).max())
    a, b = interleaved_medians(kernels, rounds)
    print(f"Cin {cin:4d} Cout {cout:4d} K {k:2d} d {d} W {w:6d}{' valid' if valid else ''}  channels {a * 1e3:7.3f} ms  "
          f"width {b * 1e3:7.3f} ms  ({a / b:5.2f}x; R {width_layout.rows} "
          f"V {width_layout.vectors}; max diff {error:.1e})", flush=True)
