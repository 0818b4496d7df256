"""The width form with a symbolic width (one kernel for every input width,
compile/kernels/source_width.py `width_source(..., width=)`) against the static width
form at the same width, kernel ms in interleaved rounds in one process.

    python tools/cpu/symbolic_width_form.py [ROUNDS]
    SHAPES="64,64,11,1,6400;32,1,7,1,12800" python tools/cpu/symbolic_width_form.py

A shape is `Cin,Cout,K,dilation,W` ('same' padding, batch 1): by default HiFi-GAN v1's
stride-1 convolutions (its resblocks' 64 and 32 channels, K 3/7/11, d 1/3/5, and
conv_post), at the widths a 1.2 and 4.8 s utterance gives them. Each kernel is compiled
alone in an IRModule, as compile/build.py's `_compile_kernels_apart` compiles a
symbolic-width kernel in a model build (in one LLVM module with the Relax shape functions
TVM 0.27 drops its noalias). Both outputs are checked against each other.
"""
import itertools
import os
import sys

import numpy as np
import tvm

from conv1d_transpose.compile.kernels import schedule_cpu_width as width_form
from conv1d_transpose.compile.kernels import source_width
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile.kernels.symbolic_width import REFERENCE_WIDTH, fit, layer_at
from conv1d_transpose.compile.machine import configure_threads
from conv1d_transpose.compile.targets import get_target

from kernel_timing import compiled_alone, interleaved_medians

SHAPES = ";".join(
    [f"64,64,{k},{d},{w}" for k, d, w in itertools.product((3, 7, 11), (1, 3, 5), (6400, 25600))]
    + [f"32,32,{k},{d},{w}" for k, d, w in itertools.product((3, 7, 11), (1, 3, 5),
                                                             (12800, 51200))]
    + ["32,1,7,1,12800"])
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
print(configure_threads())
target = get_target("host").tvm_target()
dev = tvm.cpu(0)
rng = np.random.default_rng(0)

print(f"{'Cin':>4} {'Cout':>4} {'K':>2} {'d':>1} {'W':>6}  {'static ms':>9} "
      f"{'symbolic ms':>11}  {'sym/static':>10}  R V  max diff", flush=True)
for shape in os.environ.get("SHAPES", SHAPES).split(";"):
    cin, cout, k, d, w = map(int, shape.split(","))
    span = (k - 1) * d
    pb, pe = span - span // 2, span // 2  # ConvTranspose pads of a 'same' Conv
    offset = span - pb - pe
    layer = layer_at(Geometry(1, 0, cin, 0, cout, k, 1, d, pb, "NCW", "float32"), offset)
    static_func, static_layout = width_form.build(layer(w), target)
    symbolic_func, symbolic_layout = width_form.build(layer(REFERENCE_WIDTH), target,
                                                      width=fit(layer))
    x = rng.standard_normal((1, cin, w)).astype(np.float32)
    f = rng.standard_normal((k, cout, cin)).astype(np.float32)  # TF layout [K, Cout, Cin]
    outputs, kernels = [], []
    for func, layout in ((static_func, static_layout), (symbolic_func, symbolic_layout)):
        lib = compiled_alone(func, target)
        args = [tvm.runtime.tensor(x, dev),
                tvm.runtime.tensor(source_width.pack_filters(f, layout), dev),
                tvm.runtime.empty(layer(w).output_shape, "float32", dev)]
        lib["main"](*args)
        outputs.append(args[2].numpy())
        kernels.append((lib.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=40),
                        args))
    error = float(np.abs(outputs[0] - outputs[1]).max())
    a, b = interleaved_medians(kernels, rounds)
    print(f"{cin:4d} {cout:4d} {k:2d} {d:1d} {w:6d}  {a * 1e3:9.3f} {b * 1e3:11.3f}  "
          f"{b / a:10.3f}  {symbolic_layout.rows} {symbolic_layout.vectors}  {error:.1e}"
          + ("" if (static_layout.rows, static_layout.vectors) ==
             (symbolic_layout.rows, symbolic_layout.vectors) else
             f"  (static R {static_layout.rows} V {static_layout.vectors})"), flush=True)
