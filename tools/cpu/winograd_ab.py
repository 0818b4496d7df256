"""Kernel-only A/B of the Winograd kernel: a git revision's source_winograd.py and
schedule_cpu_winograd.py against the working copy's, same layout and plan, interleaved
in one process. (Before the kernels were split by idea, issue 28, both were in
winograd.py, whose imports no longer resolve: for such a revision, check it out.)

    python tools/cpu/winograd_ab.py REV WORKLOAD ROUNDS [PLAN-KEYWORDS-JSON]

PLAN-KEYWORDS-JSON: schedule_cpu.plan() keywords, e.g. '{"winograd": true, "vectors": 4}';
WL=FILE for a workloads file of your own. Used for the old -> new kernel figures of the
per-tile transform and the NCW output transpose (issue #4 notes).
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import tvm

from kernel_timing import checked_kernel, interleaved_medians
from conv1d_transpose.compile.machine import configure_threads
from conv1d_transpose.workloads import find_workload
from conv1d_transpose.compile.kernels import Geometry, plan_layout
from conv1d_transpose.compile.kernels import schedule_cpu, schedule_cpu_winograd, source_winograd
from conv1d_transpose.compile.targets import get_target

configure_threads(2)
rev, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
keywords = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {"winograd": True}


def at_revision(module):
    """`module` (one of compile/kernels/) as it is at revision `rev`."""
    stem = module.__name__.rpartition(".")[2]
    source = subprocess.run(["git", "show", f"{rev}:compile/kernels/{stem}.py"], check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{stem}_old.py")
        with open(path, "w") as handle:
            handle.write(source)
        spec_ = importlib.util.spec_from_file_location(f"{stem}_old", path)
        old = importlib.util.module_from_spec(spec_)
        old.__package__ = module.__package__  # its relative imports resolve against the package
        spec_.loader.exec_module(old)
    return old


old = (at_revision(source_winograd), at_revision(schedule_cpu_winograd))
new = (source_winograd, schedule_cpu_winograd)

workload = find_workload(name, os.environ.get("WL"))
spec = workload.spec()
x, f = workload.arrays()
geometry = Geometry.from_spec(spec)
target = get_target("host").tvm_target()
cpu_plan = schedule_cpu.plan(geometry, schedule_cpu.describe_target(target), **keywords)
assert cpu_plan.winograd, cpu_plan
# (The layout of the working copy's rule; a revision before summed filters ignores it.)
summed = schedule_cpu_winograd.blocks_reduction(cpu_plan, spec.stride)
layout = plan_layout(geometry, cpu_plan.tiling, True, cpu_plan.phase_major, summed_filters=summed)
print(cpu_plan)
labels, kernels = (rev, "working copy"), []
for label, (source, schedule) in zip(labels, (old, new)):
    func = schedule.schedule(tvm.script.from_source(source.winograd_source(layout)), layout,
                             cpu_plan)
    evaluator, args, error, ok = checked_kernel(func, layout, spec, x, f, target)
    print(f"{label}: max error {error:.2e}, {'ok' if ok else 'FAIL'}")
    kernels.append((evaluator, args))
medians = interleaved_medians(kernels, rounds)
for label, median in zip(labels, medians):
    print(f"{name} {label:>14}: {median * 1e3:8.3f} ms  {medians[0] / median:5.3f}x")
