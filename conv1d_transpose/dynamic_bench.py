"""`conv1d-transpose bench --dynamic-width FRAMES,...`: one TVM build for every width
against a build per width and onnxruntime (issue 30's bar for a symbolic width).

Each layer is exported once with a free width (`build_model(..., dynamic_width=True)`,
the layout torch's exporters write: NCW unless the layer says otherwise) and run at
several lengths of the model that holds it: a layer of the suite is its model at
`REFERENCE_FRAMES` frames (hifigan-up2's 1600 positions are 200 mel frames after an
8x upsampler), so at F frames its width is `width * F / REFERENCE_FRAMES`. Backends:

- `tvm:host dynamic`: the dynamic-width model on `backend='tvm'`: ONE artifact for every
  width (compile/kernels/symbolic_width.py), opened once;
- `tvm:host static`: the same layer exported at that one width: what a build per width
  (issue 30's specialisation) gives, a static kernel with its tuning record where one
  ships;
- `onnxruntime:cpu`: the dynamic-width model (onnxruntime takes a free dimension).

Every output is checked against the numpy reference first; then the three are timed as
the layer bench times them (isolated, alternated blocks).
"""
from __future__ import annotations

import dataclasses
import tempfile

import numpy as np

from .graph import build_model, max_error, sweeps
from .workloads import Workload

BACKENDS = ("onnxruntime:cpu", "tvm:host dynamic", "tvm:host static")
# The model length the suite's layers stand for (workloads.yaml: hifigan-up1 at 200 mel
# frames, hifigan-up2 at its 1600 positions).
REFERENCE_FRAMES = 200


def at_frames(layer: Workload, frames: int) -> Workload:
    """A layer of the suite (at REFERENCE_FRAMES frames of its model) at `frames` frames."""
    return dataclasses.replace(layer, width=max(1, layer.width * frames // REFERENCE_FRAMES))


# HiFi-GAN V1's upsamplers (workloads.yaml) and EnCodec 24 kHz's first three (ratios 8,
# 5, 4; kernel 2r; the ConvTranspose has no pads, its Slice trims after it:
# architectures.encodec_decoder), at 200 frames, in NCW as torch exports them.
LAYERS = tuple(Workload(name, 1, width, cin, cout, kernel, stride, padding, data_format="NCW")
               for name, width, cin, cout, kernel, stride, padding in (
                   ("hifigan-up1", 200, 512, 256, 16, 8, "SAME"),
                   ("hifigan-up2", 1600, 256, 128, 16, 8, "SAME"),
                   ("hifigan-up3", 12800, 128, 64, 4, 2, "SAME"),
                   ("hifigan-up4", 25600, 64, 32, 4, 2, "SAME"),
                   ("encodec-up1", 200, 512, 256, 16, 8, "VALID"),
                   ("encodec-up2", 1600, 256, 128, 10, 5, "VALID"),
                   ("encodec-up3", 8000, 128, 64, 8, 4, "VALID")))


def layers_named(names, data_format: str | None = None) -> list[Workload]:
    """The LAYERS named (all for none), in `data_format` where given ('NWC' or 'NCW');
    an unknown name or layout raises ArgumentError."""
    from .graph.errors import ArgumentError

    known = {layer.name: layer for layer in LAYERS}
    unknown = [name for name in names or () if name not in known]
    if unknown:
        raise ArgumentError(f"--only {unknown[0]!r}: the dynamic-width bench has the "
                            f"layers {', '.join(known)}")
    if data_format not in (None, "NWC", "NCW"):
        raise ArgumentError(f"--data-format {data_format!r}: 'NWC' or 'NCW'")
    chosen = [known[name] for name in names] if names else list(LAYERS)
    if data_format:
        chosen = [dataclasses.replace(layer, data_format=data_format) for layer in chosen]
    return chosen


def run_dynamic_bench(layers, frames=(50, 200, 1000), *, rounds=5, threads=None,
                      cache_dir=None, quick=False) -> dict:
    """{"header", "layers": [{"name", "frames": [{"frames", "width", "results"}]}]}."""
    import platform
    import time

    from . import bench
    from .runtime import InferenceSession

    settings = dict(bench.QUICK if quick else bench.FULL, rounds=rounds)
    if threads is not None:
        bench._pin_tvm_threads(threads)
    own_cache = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="conv1d-transpose-dynamic-")
    document = {"header": {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "machine": platform.processor() or platform.machine(),
                           "threads": threads, "frames": list(frames),
                           "load_before": bench._load_average(),
                           "cache": "fresh" if own_cache else cache_dir},
                "layers": []}
    for layer in layers:
        spec = layer.spec()
        filters = sweeps.random_arrays(spec.input_shape, spec.filters_shape, spec.dtype,
                                       1)[1]
        dynamic_model = build_model(spec, filters, dynamic_width=True)
        start = time.perf_counter()
        dynamic = InferenceSession(dynamic_model, backend="tvm", cache_dir=cache_dir,
                                   threads=threads)
        opened = time.perf_counter() - start
        onnxruntime = InferenceSession(dynamic_model, backend="onnxruntime", threads=threads)
        row = {"name": layer.name, "layer": dataclasses.asdict(layer),
               "dynamic_open_s": opened, "dynamic_backend": dynamic.backend,
               "dynamic_scheduled": bool(getattr(dynamic._session, "scheduled", False)),
               "frames": []}
        for count in frames:
            at = at_frames(layer, count).spec()
            x = sweeps.random_arrays(at.input_shape, at.filters_shape, at.dtype, count)[0]
            static = InferenceSession(build_model(at, filters), backend="tvm",
                                      cache_dir=cache_dir, threads=threads)
            sessions = {"onnxruntime:cpu": onnxruntime, "tvm:host dynamic": dynamic,
                        "tvm:host static": static}
            results = {}
            entrants = []
            for name, session in sessions.items():
                [y] = session.run(None, {"input": x})
                error, ok = max_error(y, x, filters, at)
                results[name] = {"status": "ok" if ok else "wrong", "max_abs_error": error}
                if ok:
                    entrants.append(bench._Entrant(name, lambda feed, s=session: s.run(
                        None, {"input": feed})))
            bench._interleaved(entrants, x, settings, lambda: None)
            for entrant in entrants:
                results[entrant.key].update(bench._summary(entrant.times, 0))
                results[entrant.key].pop("gflops", None)
            row["frames"].append({"frames": count, "width": at.in_width, "results": results})
        document["layers"].append(row)
    document["header"]["load_after"] = bench._load_average()
    # (What the bench command exits 1 on: a backend that gave a wrong answer.)
    document["records"] = [{"layer": row["name"], "frames": entry["frames"], "backend": name,
                            "status": "FAIL" if result["status"] != "ok" else "ok"}
                           for row in document["layers"] for entry in row["frames"]
                           for name, result in entry["results"].items()]
    if own_cache:
        import shutil
        shutil.rmtree(cache_dir, ignore_errors=True)
    return document


def ratios(entry: dict) -> dict:
    """{"vs_onnxruntime": onnxruntime / dynamic, "vs_static": static / dynamic} medians
    (None where a backend has no time)."""
    results = entry["results"]

    def median(name):
        return results.get(name, {}).get("median_ms")

    dynamic = median("tvm:host dynamic")
    out = {}
    for key, name in (("vs_onnxruntime", "onnxruntime:cpu"), ("vs_static", "tvm:host static")):
        other = median(name)
        out[key] = other / dynamic if dynamic and other else None
    return out


def render_dynamic(document, console) -> None:
    """One table: each layer at each length, the three medians and the two ratios."""
    from rich.table import Table

    header = document["header"]
    console.print(f"one build for every width, {header['date']}, {header['machine']}, "
                  f"threads {header['threads'] or 'default'}, load {header['load_before']} "
                  f"-> {header['load_after']}")
    table = Table()
    for column in ("layer", "frames", "width", "onnxruntime ms", "static ms", "dynamic ms",
                   "vs onnxruntime", "vs static"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in document["layers"]:
        for entry in row["frames"]:
            results, r = entry["results"], ratios(entry)

            def ms(name):
                result = results[name]
                return f"{result['median_ms']:.3f}" if "median_ms" in result else \
                    result["status"]

            table.add_row(row["name"], str(entry["frames"]), str(entry["width"]),
                          ms("onnxruntime:cpu"), ms("tvm:host static"),
                          ms("tvm:host dynamic"),
                          f"{r['vs_onnxruntime']:.2f}x" if r["vs_onnxruntime"] else "-",
                          f"{r['vs_static']:.2f}x" if r["vs_static"] else "-")
    console.print(table)
