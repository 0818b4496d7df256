"""Build here (no GPU needed) the CUDA kernel of each layer under several CudaPlans, as
kernel-only libraries with sm_90 fatbins, for check.py to verify and time on the GPU.

    python tools/gpu/build_variants.py OUT_DIR   (env: WORKLOADS file, ROWS, THREADS, JOBS)

With SHARED set ("rows,threads,row_threads,channels,in_chunk[,vector[,skew]];..."), it builds those
shared-memory plans instead of the ROWS x THREADS register-tile grid. LAYERS=name,...
builds only those layers. NOSTORE=1 adds, for each kernel, a diagnostic copy (tag
suffix _nostore) that stores an output only if it equals 12345.678: wrong, and timed only,
it shows what the kernel's stores cost. The NCW skew figures (docs/design/cuda.md,
docs/cuda/h200-ncw-skew.json, where the tags were rule_skew0/1) are these kernels:

    LAYERS=ncw-up2,hifigan-up2 SHARED="4,32,4,4,16,4,0;4,32,4,4,16,4,1" NOSTORE=1 \
        python tools/gpu/build_variants.py .gpu/diag
    WORKLOADS=docs/outside-suite.yaml LAYERS=ncw-s5-k10 NOSTORE=1 \
        SHARED="2,16,8,2,16,4,0;2,16,8,2,16,4,1" python tools/gpu/build_variants.py .gpu/diag-outside

then on the GPU machine: VARIANTS=diag,diag-outside ONLY=environment,kernel_sweep bash .gpu/run.sh
"""
import dataclasses, json, os, re, sys, time, itertools, tempfile
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


def variant_tag(name: str, plan, nostore: bool) -> str:
    """A kernel variant's file name and index key."""
    return f"{name}__{plan_tag(plan)}" + ("_nostore" if nostore else "")


def without_stores(source: str) -> str:
    """The NOSTORE diagnostic: each output store guarded by a test that is never true for
    the checked inputs, so the compiler keeps the computation but not the stores' cost."""
    edited, count = re.subn(r"(\n\s*)(out_ptr\[[^\n]*\] = (acc0_local_ptr\[\d+\]);)",
                            r"\1if (\3 == 12345.678f) \2", source)
    assert count, "no output stores found"
    return edited


def one(job):
    name, geometry, plan, nostore = job
    tag = variant_tag(name, plan, nostore)
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
    fatbins = [B.compile_fatbin(without_stores(s) if nostore else s, "sm_90") for s in sources]
    with tempfile.TemporaryDirectory() as work:
        ex.export_library(path, workspace_dir=work, fpack_imports=B._packer(dict(zip(sources, fatbins))))
    return tag, round(time.time() - t0, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    jobs, index = [], {}
    wfile = os.environ.get("WORKLOADS")
    layers = [n for n in os.environ.get("LAYERS", "").split(",") if n]
    copies = (False, True) if os.environ.get("NOSTORE") == "1" else (False,)
    for w in load_workloads(wfile):
        if layers and w.name not in layers:
            continue
        spec_name, geometry = w.name, Geometry.from_spec(w.spec())
        cap = -(-geometry.out_channels // 32) * 32
        plans = [schedule_cuda.choose_plan(geometry) if p == "rule" else p for p in SHARED]
        plans = plans or [schedule_cuda.CudaPlan(rows, threads)
                           for rows, threads in itertools.product(ROWS, THREADS)
                           if threads <= max(cap, 32)]
        for plan, nostore in itertools.product(plans, copies):
            jobs.append((spec_name, geometry, plan, nostore))
            index[variant_tag(spec_name, plan, nostore)] = {
                "workload": spec_name, **dataclasses.asdict(plan), "nostore": nostore,
                "workloads": os.path.basename(wfile) if wfile else None}
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    with ProcessPoolExecutor(int(os.environ.get("JOBS", "2"))) as pool:
        for tag, secs in pool.map(one, jobs):
            print(tag, secs, flush=True)


if __name__ == "__main__":
    main()
