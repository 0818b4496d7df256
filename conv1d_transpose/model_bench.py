"""`conv1d-transpose bench --model`: whole models, checked, then timed as bench times layers.

A model is an ONNX file or a built-in architecture (architectures.py: HiFi-GAN V1, the
EnCodec decoder, a Demucs v2 decoder, tf2onnx's Keras vocoder). Every backend first runs
the same random input and is compared with onnxruntime's output (a whole model has no
numpy reference; onnxruntime is the reference backend); then the backends are timed in
interleaved, isolated blocks (bench.py's protocol). `--profile` adds where the time goes:
per segment of a split session, and per op type inside onnxruntime (its own profiler).

`run_model_bench(...)` returns the JSON document, `render_models` prints it; the command
(cli/bench.py) calls them.
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import platform
import tempfile
import time
import warnings

import numpy as np
import onnx

from .compile.machine import cpu_model, physical_cores
from .graph.errors import ArgumentError

# Backends a model is timed on by default: what a user deploys with us, and without.
DEFAULT_BACKENDS = ("auto", "onnxruntime:cpu")
REFERENCE = "onnxruntime:cpu"
# A backend agrees with onnxruntime when its largest difference is at most this share of
# onnxruntime's largest magnitude: float32 sums over thousands of terms in a different
# order (measured 2e-6 to 7e-6 on the architectures).
RELATIVE_TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "float64": 1e-9}


def load_model(model: str, overrides: dict | None = None) -> tuple[str, onnx.ModelProto]:
    """(name, model) for an architecture name or a path to an .onnx file."""
    from . import architectures

    if model in architectures.ARCHITECTURES:
        return model, architectures.build(model, **(overrides or {}))
    if os.path.isfile(model):
        return os.path.basename(model), onnx.load(model)
    raise ArgumentError(f"--model {model!r} is neither an .onnx file nor an architecture; "
                        f"architectures: {', '.join(architectures.ARCHITECTURES)}")


def parse_inputs(items) -> dict[str, list[int]]:
    """`NAME=1x80x50` (or `NAME=1,80,50`) -> {NAME: [1, 80, 50]}, for inputs whose shape
    has a free dimension."""
    shapes = {}
    for item in items or ():
        name, _, shape = item.partition("=")
        try:
            dims = [int(d) for d in shape.replace("x", ",").split(",")]
        except ValueError:
            dims = None
        if not name or not dims or any(d < 1 for d in dims):
            raise ArgumentError(f"--input {item!r} must be NAME=SHAPE, e.g. mel=1x80x50")
        shapes[name] = dims
    return shapes


def feeds_for(model: onnx.ModelProto, shapes: dict, seed: int = 0) -> dict:
    """Random inputs for every graph input; a free dimension needs `shapes`."""
    rng = np.random.default_rng(seed)
    constants = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in constants:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        shape = shapes.get(value.name, dims)
        if any(d is None for d in shape) or len(shape) != len(dims):
            raise ArgumentError(f"input {value.name!r} has shape {dims} with a free "
                                f"dimension: give it, e.g. --input {value.name}="
                                + "x".join(str(d or 100) for d in dims))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        feeds[value.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" \
            else np.zeros(shape, dtype)
    unknown = set(shapes) - set(feeds)
    if unknown:
        raise ArgumentError(f"--input names {sorted(unknown)}, not inputs of the model; "
                            f"inputs: {sorted(feeds)}")
    return feeds


def _session(backend: str, model, threads, cache_dir):
    from .runtime.onnxruntime_backend import OnnxRuntimeSession
    from .runtime.session import InferenceSession

    if backend == REFERENCE:
        return OnnxRuntimeSession(model, threads=threads)
    if backend == "auto":
        return InferenceSession(model, backend="auto", threads=threads, cache_dir=cache_dir)
    if backend.startswith("tvm:"):
        return InferenceSession(model, backend="tvm", target=backend[4:], threads=threads,
                                cache_dir=cache_dir)
    raise ArgumentError(f"model backend {backend!r} is not supported; allowed: auto, "
                        f"onnxruntime:cpu, tvm:<target>")


def run_model_bench(models, backends=None, *, inputs=None, threads=None, quick=False,
                    rounds=None, cache_dir=None, profile=False, progress=None) -> dict:
    """Check and time `backends` on whole `models` (names or paths); the JSON document.

    Args:
      models: architecture names or .onnx paths.
      backends: 'auto' (our InferenceSession's choice), 'onnxruntime:cpu', 'tvm:<target>'
        (the whole model on TVM). Default: auto and onnxruntime.
      inputs: {input name: shape} for inputs with a free dimension.
      threads: threads for every backend (default: physical cores).
      cache_dir: TVM's artifact cache (default: a fresh one: opening includes compiling).
      profile: also time each segment of a split session and each op type in onnxruntime.
      progress: a callable(str) told what runs.
    """
    from .bench import FULL, QUICK, _Entrant, _interleaved

    backends = list(backends or DEFAULT_BACKENDS)
    threads = int(threads) if threads else physical_cores()
    settings = dict(QUICK if quick else FULL)
    if rounds is not None:
        settings["rounds"] = int(rounds)
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="conv1d-transpose-models-")
    say = progress or (lambda text: None)
    header = {"machine": f"{platform.node()} ({platform.system()} {platform.machine()})",
              "cpu_model": cpu_model(), "threads": threads,
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "settings": settings, "models": []}
    records = []
    for item in models:
        name, model = load_model(item)
        feeds = feeds_for(model, inputs or {})
        heavy = collections.Counter(n.op_type for n in model.graph.node)
        header["models"].append({"name": name, "nodes": len(model.graph.node),
                                 "ops": dict(heavy.most_common()),
                                 "inputs": {k: list(v.shape) for k, v in feeds.items()}})
        reference = None
        entrants = []
        for backend in [REFERENCE] + [b for b in backends if b != REFERENCE]:
            say(f"{name}: opening {backend}")
            record = {"model": name, "backend": backend, "runs_on": None, "status": None,
                      "open_s": None, "median_ms": None, "p10_ms": None, "p90_ms": None,
                      "speedup_vs_onnxruntime": None, "max_rel_err": None, "placement": None,
                      "note": "", "profile": None}
            try:
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    session = _session(backend, model, threads, cache_dir)
                    if getattr(session, "specialized", None) is not None or \
                            getattr(session, "width_checks", None) is not None:
                        # One static session per input shape (runtime/specialized_session.py)
                        # or one build checked per width class (symbolic_session.py): it
                        # opens, or decides, and warns, at the first call with these shapes.
                        session.run(None, feeds)
                record["open_s"] = time.perf_counter() - start
                record["runs_on"] = session.backend
                record["note"] = "; ".join(str(w.message).splitlines()[0] for w in caught
                                           if "Warning" in w.category.__name__)
                if getattr(session, "specialized", None) is not None:
                    shapes = ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape
                                       in session.specialized["inputs"].items())
                    record["note"] = "; ".join(filter(None, [
                        f"specialized per input shape ({shapes})", record["note"]]))
                if getattr(session, "width_checks", None):
                    record["note"] = "; ".join(filter(None, [
                        "one build for every width, checked per width class",
                        record["note"]]))
                placement = getattr(session, "placement", None)
                if placement:
                    record["placement"] = dict(collections.Counter(placement.values()))
                outputs = session.run(None, feeds)
            except Exception as error:  # a backend failing on a model is reported, not fatal
                record.update(status="FAIL", note=f"{type(error).__name__}: "
                                                  f"{str(error).splitlines()[0] if str(error) else ''}")
                records.append(record)
                continue
            if reference is None:
                reference = outputs
            error = max(float(np.max(np.abs(np.asarray(a, np.float64) - b)) /
                              max(float(np.max(np.abs(b))), 1e-30))
                        for a, b in zip(outputs, reference))
            dtype = str(np.asarray(reference[0]).dtype)
            ok = error <= RELATIVE_TOLERANCE.get(dtype, 1e-4)
            record.update(max_rel_err=error, status="ok" if ok else "FAIL")
            if ok and backend in backends:
                entrants.append(_Entrant(record, lambda _x, s=session: s.run(None, feeds)))
            if profile:
                record["profile"] = _profile(session, model, feeds, threads)
            records.append(record)
        say(f"{name}: timing {len(entrants)} backends")
        _interleaved(entrants, None, settings, lambda: None)
        base = None
        for entrant in entrants:
            ms = np.asarray(entrant.times) * 1e3
            entrant.key.update(median_ms=float(np.median(ms)),
                               p10_ms=float(np.percentile(ms, 10)),
                               p90_ms=float(np.percentile(ms, 90)))
            if entrant.key["backend"] == REFERENCE:
                base = entrant.key["median_ms"]
        for entrant in entrants:
            if base:
                entrant.key["speedup_vs_onnxruntime"] = base / entrant.key["median_ms"]
    return {"header": header, "records": [r for r in records
                                          if r["backend"] in backends or r["status"] != "ok"]}


def _profile(session, model, feeds, threads, calls=3) -> list[dict]:
    """Where a call's time goes: [{"part", "backend", "ops", "ms"}], largest first."""
    from .runtime.session import InferenceSession

    inner = session._session if isinstance(session, InferenceSession) else session
    inner = getattr(inner, "current", None) or inner  # a specialisation's own session
    parts = getattr(inner, "_parts", None)
    if parts is not None:  # a split session: time each segment
        result = []
        values = dict(feeds)
        for inputs, outputs, part in parts:
            args = {n: values[n] for n in inputs}
            part.run(outputs, args)
            start = time.perf_counter()
            for _ in range(calls):
                got = part.run(outputs, args)
            values.update(zip(outputs, got))
            result.append({"part": ",".join(outputs)[:60], "backend": part.backend,
                           "ms": (time.perf_counter() - start) / calls * 1e3})
        by_backend = collections.defaultdict(float)
        for row in result:
            by_backend[row["backend"]] += row["ms"]
        return sorted(({"part": f"all {b} segments", "backend": b, "ms": ms}
                       for b, ms in by_backend.items()), key=lambda r: -r["ms"]) + \
            sorted(result, key=lambda r: -r["ms"])[:10]
    if getattr(inner, "backend", "") == REFERENCE:
        return _onnxruntime_profile(model, feeds, threads, calls)
    return []


def _onnxruntime_profile(model, feeds, threads, calls) -> list[dict]:
    """onnxruntime's own profiler, summed per op type over `calls` calls."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    for _ in range(calls + 1):
        session.run(None, feeds)
    path = session.end_profiling()
    with open(path) as stream:
        events = json.load(stream)
    totals = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event.get("args", {}).get("op_name", "?")] += event["dur"] / 1e3
    return sorted(({"part": op, "backend": REFERENCE, "ms": ms / (calls + 1)}
                   for op, ms in totals.items()), key=lambda r: -r["ms"])


def render_models(document, console=None) -> None:
    """The terminal report: the machine, then one table per model."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    h = document["header"]
    console.print(f"[bold]{h['cpu_model']}[/], {h['machine']}, {h['date']}, "
                  f"{h['threads']} threads")
    for m in h["models"]:
        ops = ", ".join(f"{op} {n}" for op, n in list(m["ops"].items())[:6])
        table = Table(title=f"[bold]{m['name']}[/]  {m['nodes']} nodes ({ops}); inputs "
                            f"{m['inputs']}", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("backend", "runs on", "status", "max rel err", "open s", "median ms",
                       "p10 ms", "p90 ms", "vs onnxruntime", "placement"):
            table.add_column(column, justify="left" if column in (
                "backend", "runs on", "status", "placement") else "right")
        notes = []
        for r in (r for r in document["records"] if r["model"] == m["name"]):
            if r["note"]:
                notes.append(f"{r['backend']}: {r['note']}")
            table.add_row(r["backend"], r["runs_on"] or "", r["status"],
                          _fmt(r["max_rel_err"], "{:.1e}"), _fmt(r["open_s"], "{:.1f}"),
                          _fmt(r["median_ms"], "{:.2f}"), _fmt(r["p10_ms"], "{:.2f}"),
                          _fmt(r["p90_ms"], "{:.2f}"),
                          _fmt(r["speedup_vs_onnxruntime"], "{:.2f}x"),
                          ", ".join(f"{b} {n}" for b, n in (r["placement"] or {}).items()))
        if notes:
            table.caption = "\n".join(notes)
            table.caption_justify = "left"
        console.print(table)
        for r in (r for r in document["records"] if r["model"] == m["name"] and r["profile"]):
            console.print(f"  where {r['backend']}'s time goes: " + "; ".join(
                f"{p['part']} ({p['backend']}) {p['ms']:.2f} ms" for p in r["profile"][:8]))


def plot_models(document, path) -> None:
    """A bar chart: each model's median ms per backend, onnxruntime's speedup written on."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in document["records"] if r["median_ms"]]
    models = list(dict.fromkeys(r["model"] for r in timed))
    backends = list(dict.fromkeys(r["backend"] for r in timed))
    figure, axes = plt.subplots(figsize=(8, 1 + 0.6 * len(models) * len(backends)))
    rows = []
    for m in models:
        for b in backends:
            r = next((r for r in timed if r["model"] == m and r["backend"] == b), None)
            if r:
                rows.append((f"{m} {b}", r["median_ms"], r["speedup_vs_onnxruntime"]))
    axes.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1])
    for y, (_, ms, speedup) in enumerate(rows[::-1]):
        axes.text(ms, y, f" {ms:.1f} ms" + (f" ({speedup:.2f}x)" if speedup else ""),
                  va="center")
    h = document["header"]
    axes.set_xlabel("median ms per call (lower is better)")
    axes.set_title(f"{h['cpu_model']}, {h['threads']} threads, {h['date'][:10]}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _fmt(value, form):
    return "" if value is None else form.format(value)
