"""Each segment of an architecture's split session (runtime/split_session.py) timed on its own,
with the split kept whatever the measurement at open says: where the split's time goes
(docs/design/placement.md, "Where the split loses").

    python tools/models/split_segments.py encodec-decoder
"""
import sys, time, collections, numpy as np
from conv1d_transpose import architectures, model_bench
from conv1d_transpose.runtime import split_session
import conv1d_transpose as ct
split_session.median_times = lambda sessions, feeds, **k: {  # keep every TVM segment
    name: 1.0 if name in ("tvm", "split") else 2.0 for name in sessions}
name = sys.argv[1]
m = architectures.build(name)
feeds = model_bench.feeds_for(m, {})
s = ct.InferenceSession(m, backend="auto", cache_dir="/tmp/cc-models2")
inner = s._session
for _ in range(3): s.run(None, feeds)
t = time.perf_counter(); 
for _ in range(5): s.run(None, feeds)
print("split total ms", (time.perf_counter()-t)/5*1e3)
values = dict(feeds)
rows = []
for inputs, outputs, part in inner._parts:
    args = {n: values[n] for n in inputs}
    part.run(outputs, args)
    t = time.perf_counter()
    for _ in range(5): got = part.run(outputs, args)
    ms = (time.perf_counter()-t)/5*1e3
    values.update(zip(outputs, got))
    shape = [tuple(values[n].shape) for n in inputs][:1]
    rows.append((part.backend, ms, outputs[0][:50], shape))
tot = collections.defaultdict(float)
for b, ms, *_ in rows: tot[b] += ms
print(dict(tot), "segments", len(rows))
for r in sorted(rows, key=lambda r: -r[1])[:25]: print(f"{r[0]:16s} {r[1]:7.2f} {r[2]} {r[3]}")
