"""Where a whole model's TVM segments spend their time, per compiled function (each
kernel, each fused elementwise function, the VM's builtins), timed through the Relax VM's
instrument hook (TVM 0.27 has no VM profiler). The hook's own cost (~2 us a call) is in
every figure.

    python tools/models/tvm_profile.py hifigan-v1 [ROWS]
"""
import os, sys, time, collections, numpy as np
# The VM made here runs on TVM's pool as the process first sized it: two workers on 2
# vCPUs, as our sessions size it (compile/machine.py), not TVM's default of one.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count()))
from conv1d_transpose import architectures, model_bench
from conv1d_transpose.runtime import split_session
import conv1d_transpose as ct
import tvm
from tvm.runtime.vm import VirtualMachine
split_session.median_times = lambda sessions, feeds, **k: {n: 1.0 if n in ("tvm", "split") else 2.0 for n in sessions}
name = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 25
m = architectures.build(name)
feeds = model_bench.feeds_for(m, {})
s = ct.InferenceSession(m, backend="auto")
parts = getattr(s._session, "_parts", None) or [(list(feeds), None, s._session)]
values = dict(feeds)
totals, counts, started = collections.defaultdict(float), collections.Counter(), {}
def instrument(func, symbol, before, ret, *args):
    if before:
        started[symbol] = time.perf_counter()
    else:
        totals[symbol] += time.perf_counter() - started[symbol]; counts[symbol] += 1
for inputs, outputs, part in parts:
    args = {n: values[n] for n in inputs}
    got = part.run(outputs, args)
    if part.backend.startswith("tvm"):
        vm = VirtualMachine(part.artifact.load_module(), tvm.cpu(), memory_cfg="pooled")
        arrays = [tvm.runtime.tensor(np.ascontiguousarray(args[i.name])) for i in part.get_inputs()]
        arrays += list(part._params)
        for _ in range(3): vm["main"](*arrays)
        t = time.perf_counter()
        for _ in range(5): vm["main"](*arrays)
        plain = (time.perf_counter() - t) / 5
        vm.set_instrument(instrument)
        runs = 5
        for _ in range(runs): vm["main"](*arrays)
        total = sum(totals.values()) / runs
        print(f"segment {outputs[0][:40]}: {plain*1e3:.2f} ms a call without the hook; "
              f"functions {total*1e3:.2f} ms with it")
        kinds = collections.defaultdict(float)
        for sym, sec in totals.items():
            kind = "kernel" if "conv1d_transpose" in sym else ("vm." + sym if sym.startswith("vm.") else "other")
            kinds[kind] += sec / runs
        print({k: round(v * 1e3, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])})
        for sym, sec in sorted(totals.items(), key=lambda kv: -kv[1])[:rows]:
            print(f"  {sec / runs * 1e3:8.3f} ms  x{counts[sym] // runs:<4d} {sym}")
        totals.clear(); counts.clear()
    values.update(zip(outputs, got))
