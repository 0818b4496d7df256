"""`conv1d-transpose bench --stream FRAMES`: a layer streamed chunk by chunk, the latency of
one chunk on each backend, state handling included (issue 30's streaming bar).

Each backend streams the layer's whole input in chunks of FRAMES frames and must give
the offline answer (checked against the numpy reference first, like every bench):

- `onnxruntime:cpu`: the exported step (`op.to_onnx(streaming=True, chunk_frames=...)`,
  graph/streaming_export.py), the carried state an input and an output of each call;
- `tvm:host step`: the same step model on our TVM backend (`InferenceSession`);
- `tvm:host stream`: `op.stream()` with the TVM backend: each push runs our kernel on the
  new frames alone and adds the overlap in numpy (conv1d_transpose/streaming.py).

Timed as the layer bench times (isolated, alternated blocks: a pause, one untimed pass
over the stream, then timed passes), each chunk's call timed on its own; the figure is
the median chunk.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from .graph import max_error
from .graph.errors import ArgumentError

BACKENDS = ("onnxruntime:cpu", "tvm:host step", "tvm:host stream")


def _chunks(x, frames, axis):
    width = x.shape[axis]
    return [np.ascontiguousarray(x[:, at:at + frames] if axis == 1 else x[:, :, at:at + frames])
            for at in range(0, width, frames)]


class _Stepper:
    """One pass over the stream through the step model of `session` (ONNX's run)."""

    def __init__(self, session, spec, frames):
        from .graph.streaming_export import state_width

        self.session, self.spec, self.frames = session, spec, frames
        self.axis = 1 if spec.data_format == "NWC" else 2
        S = state_width(spec)
        self.zeros = np.zeros((spec.batch, S, spec.out_channels) if self.axis == 1 else
                              (spec.batch, spec.out_channels, S), spec.dtype)

    def run(self, chunks):
        state, outputs, times = self.zeros, [], []
        for piece in chunks:
            if piece.shape[self.axis] != self.frames:  # the step model's chunk is fixed
                pad = [(0, 0)] * 3
                pad[self.axis] = (0, self.frames - piece.shape[self.axis])
                piece = np.pad(piece, pad)
            start = time.perf_counter()
            out, state = self.session.run(None, {"input": piece, "state": state})
            times.append(time.perf_counter() - start)
            outputs.append(out)
        stream = np.concatenate(outputs + [state], axis=self.axis)
        return self._cropped(stream), times

    def _cropped(self, stream):
        spec, axis = self.spec, self.axis
        begin, width = spec.pad_begin, spec.out_width
        if stream.shape[axis] < begin + width:
            pad = [(0, 0)] * 3
            pad[axis] = (0, begin + width - stream.shape[axis])
            stream = np.pad(stream, pad)
        return stream[:, begin:begin + width] if axis == 1 else stream[:, :, begin:begin + width]


class _Pusher:
    """One pass over the stream through `op.stream()`."""

    def __init__(self, op, spec):
        self.op, self.axis = op, 1 if spec.data_format == "NWC" else 2

    def run(self, chunks):
        stream, outputs, times = self.op.stream(), [], []
        for piece in chunks:
            start = time.perf_counter()
            outputs.append(stream.push(piece))
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        outputs.append(stream.flush())
        times[-1] += time.perf_counter() - start  # the last chunk's call includes the flush
        return np.concatenate(outputs, axis=self.axis), times


def run_stream_bench(workloads, frames: int, *, rounds: int = 5, threads=None,
                     cache_dir=None) -> dict:
    """Stream each workload in chunks of `frames` frames on every backend of BACKENDS;
    returns {"header", "records"} (one record per workload and backend)."""
    import conv1d_transpose as ct

    from .compile.machine import configure_threads, physical_cores

    if not isinstance(frames, int) or frames < 1:
        raise ArgumentError(f"--stream {frames!r}: the frames of a chunk must be a positive int")
    threads = threads or physical_cores()
    configure_threads(threads)
    records = []
    for workload in workloads:
        spec = workload.spec()
        x, f = workload.arrays()
        if frames > spec.in_width:
            raise ArgumentError(f"--stream {frames}: {workload.name} has only "
                                f"{spec.in_width} input frames")
        axis = 1 if spec.data_format == "NWC" else 2
        chunks = _chunks(x, frames, axis)
        args = (f, list(spec.output_shape), spec.stride, spec.padding, spec.data_format,
                spec.dilation)
        exporter = ct.Conv1DTranspose(*args, backend="onnxruntime")
        step = exporter.to_onnx(streaming=True, chunk_frames=frames)
        runners = {
            "onnxruntime:cpu": _Stepper(ct.InferenceSession(step, backend="onnxruntime",
                                                            threads=threads), spec, frames),
            "tvm:host step": _Stepper(ct.InferenceSession(step, backend="tvm",
                                                          threads=threads,
                                                          cache_dir=cache_dir), spec, frames),
            "tvm:host stream": _Pusher(ct.Conv1DTranspose(*args, backend="tvm",
                                                          threads=threads,
                                                          cache_dir=cache_dir), spec),
        }
        errors = {}
        for name, runner in runners.items():
            out, _ = runner.run(chunks)
            errors[name] = max_error(out, x, f, spec)
        times = {name: [] for name in runners}
        for _ in range(rounds):
            for name, runner in runners.items():
                time.sleep(0.05)  # onnxruntime's pool stops spinning
                runner.run(chunks)
                times[name] += runner.run(chunks)[1]
        base = statistics.median(times["onnxruntime:cpu"])
        for name in runners:
            median = statistics.median(times[name])
            ordered = sorted(times[name])
            error, ok = errors[name]
            records.append({
                "workload": workload.name, "backend": name, "frames": frames,
                "chunks": len(chunks), "status": "ok" if ok else "FAIL",
                "max_abs_err": float(error), "median_ms": median * 1e3,
                "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1e3,
                "vs_onnxruntime": base / median})
    header = {"kind": "stream", "frames": frames, "rounds": rounds, "threads": threads,
              "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return {"header": header, "records": records}


def render_stream(document, console) -> None:
    """The per-chunk latency table, one block per workload."""
    from rich.table import Table

    header = document["header"]
    console.print(f"streamed in chunks of {header['frames']} frames, {header['threads']} "
                  f"threads, {header['when']}: each chunk's call, state included")
    for name in dict.fromkeys(r["workload"] for r in document["records"]):
        rows = [r for r in document["records"] if r["workload"] == name]
        table = Table(title=f"{name}: {rows[0]['chunks']} chunks", title_justify="left")
        for column in ("backend", "status", "max abs err", "median ms a chunk", "p90 ms",
                       "vs onnxruntime"):
            table.add_column(column, justify="left" if column in ("backend", "status")
                             else "right")
        for r in rows:
            table.add_row(r["backend"], r["status"], f"{r['max_abs_err']:.1e}",
                          f"{r['median_ms']:.3f}", f"{r['p90_ms']:.3f}",
                          f"{r['vs_onnxruntime']:.2f}x")
        console.print(table)
