"""Build here (no GPU needed) the CUDA kernel of each layer under several CudaPlans, as
kernel-only libraries with sm_90 fatbins, for check.py to verify and time on the GPU.

    python tools/gpu/build_variants.py OUT_DIR   (env: WORKLOADS file, ROWS, THREADS, JOBS)

With SHARED set ("rows,threads,row_threads,channels,in_chunk[,vector[,skew]];..."), it builds those
shared-memory plans instead of the ROWS x THREADS register-tile grid.
"""
import dataclasses, json, os, sys, time, itertools, tempfile
from concurrent.futures import ProcessPoolExecutor
import tvm
from conv1d_transpose.compile.kernels import schedule_cuda
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile import build as B
from conv1d_transpose.workloads import load_workloads

OUT = sys.argv[1]
ROWS = [int(v) for v in os.environ.get("ROWS", "1,2,4,8").split(",")]
THREADS = [int(v) for v in os.environ.get("THREADS", "32,64,128,256").split(",")]
# "rule" in SHARED: the plan choose_plan gives the layer.
SHARED = [p if p == "rule" else schedule_cuda.CudaPlan(*map(int, p.split(",")))
          for p in os.environ.get("SHARED", "").split(";") if p]


def plan_tag(plan) -> str:
    tag = f"r{plan.rows}_t{plan.threads}"
    if plan.shared:
        tag += f"_y{plan.row_threads}_c{plan.channels}_k{plan.in_chunk}"
    return tag + (f"_v{plan.vector}" if plan.vector > 1 else "") + \
        (f"_s{plan.skew}" if plan.skew else "")


def one(job):
    name, geometry, plan = job
    tag = f"{name}__{plan_tag(plan)}"
    path = os.path.join(OUT, tag + ".so")
    if os.path.exists(path):
        return tag, None
    t0 = time.time()
    func, layout = schedule_cuda.build(geometry, plan=plan)
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host={"kind": "llvm"})
    ex = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    mods = [ex.mod]
    for m in list(mods):
        mods.extend(m.imports)
    sources = [m.inspect_source("cuda") for m in mods if m.kind == "cuda"]
    fatbins = [B.compile_fatbin(s, "sm_90") for s in sources]
    with tempfile.TemporaryDirectory() as work:
        ex.export_library(path, workspace_dir=work, fpack_imports=B._packer(dict(zip(sources, fatbins))))
    return tag, round(time.time() - t0, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    jobs, index = [], {}
    wfile = os.environ.get("WORKLOADS")
    for w in load_workloads(wfile):
        spec_name, geometry = w.name, Geometry.from_spec(w.spec())
        cap = -(-geometry.out_channels // 32) * 32
        plans = [schedule_cuda.choose_plan(geometry) if p == "rule" else p for p in SHARED]
        plans = plans or [schedule_cuda.CudaPlan(rows, threads)
                           for rows, threads in itertools.product(ROWS, THREADS)
                           if threads <= max(cap, 32)]
        for plan in plans:
            jobs.append((spec_name, geometry, plan))
            index[f"{spec_name}__{plan_tag(plan)}"] = {
                "workload": spec_name, **dataclasses.asdict(plan),
                "workloads": os.path.basename(wfile) if wfile else None}
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    with ProcessPoolExecutor(int(os.environ.get("JOBS", "2"))) as pool:
        for tag, secs in pool.map(one, jobs):
            print(tag, secs, flush=True)


if __name__ == "__main__":
    main()
