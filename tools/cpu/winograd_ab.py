"""Kernel-only A/B of the Winograd kernel: a git revision's winograd.py against the
working copy's, same layout and plan, interleaved in one process.

    python tools/cpu/winograd_ab.py REV WORKLOAD ROUNDS [PLAN-KEYWORDS-JSON]

PLAN-KEYWORDS-JSON: schedule_cpu.plan() keywords, e.g. '{"winograd": true, "vectors": 4}';
WL=FILE for a workloads file of your own. Used for the old -> new kernel figures of the
per-tile transform and the NCW output transpose (issue #4 notes).
"""
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile

import tvm

from conv1d_transpose.runtime.tvm_backend import configure_threads
from conv1d_transpose.workloads import find_workload
from conv1d_transpose.compile.kernels import schedule_cpu, winograd as new
from conv1d_transpose.compile.kernels.polyphase import Geometry, pack_filters, plan_layout
from conv1d_transpose.compile.targets import get_target
from conv1d_transpose.graph.reference import max_error

configure_threads(2)
rev, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
keywords = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {"winograd": True}
source = subprocess.run(["git", "show", f"{rev}:compile/kernels/winograd.py"], check=True,
                        capture_output=True, text=True).stdout
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "_winograd_old.py")
    with open(path, "w") as handle:
        # Its relative import of .polyphase resolves against the installed package.
        handle.write(source.replace("from .polyphase", "from conv1d_transpose.compile.kernels.polyphase")
                     .replace("from .schedule_cpu", "from conv1d_transpose.compile.kernels.schedule_cpu"))
    spec_ = importlib.util.spec_from_file_location("_winograd_old", path)
    old = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(old)

workload = find_workload(name, os.environ.get("WL"))
spec = workload.spec()
x, f = workload.arrays()
geometry = Geometry.from_spec(spec)
target = get_target("host").tvm_target()
cpu_plan = schedule_cpu.plan(geometry, schedule_cpu.describe_target(target), **keywords)
assert cpu_plan.winograd, cpu_plan
layout = plan_layout(geometry, cpu_plan.tiling, True)
print(cpu_plan)
runs = []
for label, module in ((rev, old), ("working copy", new)):
    func = module.schedule(tvm.script.from_source(module.winograd_source(layout)), layout,
                           cpu_plan)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target=target).jit()
    dev = tvm.cpu(0)
    args = [tvm.runtime.tensor(x, dev), tvm.runtime.tensor(pack_filters(f, layout), dev),
            tvm.runtime.empty(spec.output_shape, spec.dtype, dev)]
    lib["main"](*args)
    error, ok = max_error(args[2].numpy(), x, f, spec)
    print(f"{label}: max error {error:.2e}, {'ok' if ok else 'FAIL'}")
    runs.append((label, lib.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=40),
                 args, []))
for _ in range(rounds):
    for label, evaluator, args, times in runs:
        times.extend(evaluator(*args).results)
base = statistics.median(runs[0][3])
for label, evaluator, args, times in runs:
    median = statistics.median(times)
    print(f"{name} {label:>14}: {median * 1e3:8.3f} ms  {base / median:5.3f}x")
