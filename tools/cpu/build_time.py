"""Build time of one kernel (schedule, LLVM compile, export) for plan variants of a 128-channel
K=11 stride-1 NCW layer: the 35 s -> 1 s figure in compile/kernels/tir.py `finish_tile`.

    python tools/cpu/build_time.py 11 '[{}, {"chunk_tiles": 4}]'
"""
import time, dataclasses, json, sys
import tvm
from conv1d_transpose.compile.kernels import Geometry, kernel_geometry, schedule_cpu
from conv1d_transpose.compile.targets import get_target
from conv1d_transpose.compile import tuning
import conv1d_transpose.graph.arguments as a
t = get_target('host').tvm_target()
cpu = schedule_cpu.describe_target(t)
K = int(sys.argv[1])
spec = a.make_spec((1,128,3200),(K,128,128),[1,128,3200],1,'SAME','NCW',1,'float32')
g = kernel_geometry(Geometry.from_spec(spec))
base = schedule_cpu.plan(g, cpu)
for variant in json.loads(sys.argv[2]):
    p = dataclasses.replace(base, **{k: v for k, v in variant.items() if k != "tiling"})
    if "tiling" in variant: p = dataclasses.replace(p, tiling=dataclasses.replace(p.tiling, **variant["tiling"]))
    sched = {"kind": "plan", "plan": tuning.plan_to_dict(p)}
    t0 = time.perf_counter()
    func, layout = tuning.kernel_from_schedule(g, t, sched)
    t1 = time.perf_counter()
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=t)
    t2 = time.perf_counter()
    lib.export_library("/tmp/k.so")
    t3 = time.perf_counter()
    print(variant, f"schedule {t1-t0:.1f}s compile {t2-t1:.1f}s export {t3-t2:.1f}s", flush=True)
