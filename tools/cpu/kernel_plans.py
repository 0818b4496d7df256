"""Kernel-only times of CPU plans for one workload, interleaved in one process.

    python tools/cpu/kernel_plans.py WORKLOAD ROUNDS generic|record|PLAN-JSON ...

PLAN-JSON: {"kw": {plan() keywords}, "tiling": {...}, other CpuPlan fields}; WL=FILE
for a workloads file of your own. A "rewrite": [[old, new], ...] key edits the scheduled
kernel's TVMScript before it is built, for trials that change what no plan can (e.g.
every panel reading channel block 0 and phase 0 of the filters, to time the kernel with
its filters in cache: '{"rewrite": [["filters[vcoo, vr, vj,", "filters[0, 0, vj,"]]}').
Such a kernel is timed but its result is wrong, so the check is reported, not enforced.
"stack_accumulators": true builds it with stack_accumulators.py's TIR pipeline.
Used for the direct vs F(2,2) figures in schedule_cpu.plan and docs/design/cpu-kernels.md.
"""
import sys, json
from kernel_timing import checked_kernel, interleaved_medians
from conv1d_transpose.compile.machine import configure_threads; print(configure_threads(2))
from conv1d_transpose.workloads import find_workload
from conv1d_transpose.compile.kernels import Geometry, kernel_geometry
from conv1d_transpose.compile.kernels import schedule_cpu
from conv1d_transpose.compile import records
from conv1d_transpose.compile.targets import get_target
name, rounds = sys.argv[1], int(sys.argv[2])
import dataclasses as _dc, os
base_name, *mods = name.split(":")
w = find_workload(base_name, os.environ.get("WL"))
if mods: w = _dc.replace(w, **{k: int(v) for k, v in (m.split("=") for m in mods[0].split(","))})
spec = w.spec(); x, f = w.arrays()
g = kernel_geometry(Geometry.from_spec(spec))  # (folded where the lowering folds)
target = get_target("host").tvm_target()
runs = []
import os
for arg0 in sys.argv[3:]:
    arg, rewrite, pipeline = arg0, None, "default"
    if arg == "generic":
        sched = {"kind": "generic"}
    elif arg == "record":
        rec = records.lookup(g, target); sched = rec.schedule
    else:
        d = json.loads(arg)
        rewrite = d.pop("rewrite", None)
        if d.pop("stack_accumulators", False):
            import stack_accumulators
            pipeline = stack_accumulators.NAME
        base = schedule_cpu.plan(g, schedule_cpu.describe_target(target), **d.pop("kw", {}))
        import dataclasses
        tiling = dataclasses.replace(base.tiling, **d.pop("tiling", {}))
        p = dataclasses.replace(base, tiling=tiling, **d)
        sched = {"kind": "plan", "plan": records.plan_to_dict(p)}
    func, layout = records.kernel_from_schedule(g, target, sched)
    if rewrite:
        import tvm
        text = func.script()
        for old, new in rewrite:
            assert old in text, old
            text = text.replace(old, new)
        parsed = tvm.script.from_source(text)
        func = parsed if isinstance(parsed, tvm.tirx.PrimFunc) else parsed["main"]
    ev, args, err, ok = checked_kernel(func, layout, spec, x, f, target, pipeline)
    print(arg[:150], sched.get("plan"), "err", err, ok, flush=True)
    runs.append((arg0, ev, args))
medians = interleaved_medians([(ev, args) for _, ev, args in runs], rounds)
for (arg, _, _), m in zip(runs, medians):
    print(f"{m*1e3:8.3f} ms {spec.flops/m/1e9:6.1f} GFLOP/s  {arg[:120]}")
