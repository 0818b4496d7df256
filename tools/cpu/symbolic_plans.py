"""A symbolic-width kernel (one kernel for every input width, compile/kernels/
symbolic_width.py) planned at several reference widths, and the kernel the lowering
builds (width_variants.py: its nests, each taken for some widths), against the static
kernel planned at each width it runs at: kernel ms in interleaved rounds in one process.

    python tools/cpu/symbolic_plans.py LAYER WIDTHS REFERENCES [ROUNDS]
    python tools/cpu/symbolic_plans.py hifigan-up4 6400,25600,128000 256,4096,25600

LAYER: a layer of conv1d_transpose/dynamic_bench.py (NCW; LAYOUT=NWC for TF's layout).
Every kernel is compiled alone in an LLVM module, as compile/build.py's
`_compile_kernels_apart` compiles a symbolic-width kernel in a model build, and checked
against the numpy reference.
"""
import dataclasses
import os
import sys

import numpy as np
import tvm

from conv1d_transpose.compile.kernels import fold_filters, kernel_geometry, pack_filters
from conv1d_transpose.compile.kernels import schedule_cpu, width_variants
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile.kernels.symbolic_width import REFERENCE_WIDTH, fit, layer_at
from conv1d_transpose.compile.machine import configure_threads
from conv1d_transpose.compile.targets import get_target
from conv1d_transpose.dynamic_bench import layers_named
from conv1d_transpose.graph.reference import max_error

from kernel_timing import compiled_alone, interleaved_medians

name, widths, references = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
print(configure_threads())
target = get_target("host").tvm_target()
cpu = schedule_cpu.describe_target(target)
dev = tvm.cpu(0)
workload = layers_named([name], os.environ.get("LAYOUT", "NCW"))[0]


base = Geometry.from_spec(workload.spec())
offset = base.out_width - base.stride * base.in_width
layer = layer_at(base, offset)
symbolic = fit(lambda w: layer(w))
kernels = {}
for reference in map(int, references.split(",")):
    func, layout = schedule_cpu.build(layer(reference), target, width=symbolic)
    plan, _ = schedule_cpu.symbolic_plan(kernel_geometry(layer(reference)), cpu, symbolic)
    kernels[f"ref {reference}"] = (compiled_alone(func, target), layout, plan)
func, layout, chosen = width_variants.build(layer(REFERENCE_WIDTH), target, symbolic)
for variant in chosen:
    print(f"variant: {variant.condition or 'else'}: {variant.why}")
kernels["variants"] = (compiled_alone(func, target), layout, chosen[-1].plan)
for width in map(int, widths.split(",")):
    w = dataclasses.replace(workload, width=width)
    spec = w.spec()
    x, f = w.arrays()
    g = kernel_geometry(layer(width))
    static_func, static_layout = schedule_cpu.build(layer(width), target)
    runs = [("static", compiled_alone(static_func, target), static_layout, schedule_cpu.plan(g, cpu))]
    runs += [(label, *kernel) for label, kernel in kernels.items()]
    timed = []
    for label, lib, layout, plan in runs:
        args = [tvm.runtime.tensor(x, dev),
                tvm.runtime.tensor(pack_filters(fold_filters(f, layout.geometry), layout), dev),
                tvm.runtime.empty(spec.output_shape, spec.dtype, dev)]
        lib["main"](*args)
        error, ok = max_error(args[2].numpy(), x, f, spec)
        assert ok, (label, error)
        timed.append((lib.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=40),
                      args))
    medians = interleaved_medians(timed, rounds)
    for (label, _, _, plan), m in zip(runs, medians):
        print(f"{name} W {width:6d} {label:>10}: {m * 1e3:8.3f} ms  {m / medians[0]:5.2f}x  "
              f"{plan.tiling} order={plan.order} winograd={plan.winograd} "
              f"chunk={plan.chunk_tiles} blocked={plan.blocked}", flush=True)
