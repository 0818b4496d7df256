"""`SplitSession`: one model, its ConvTranspose nodes on TVM and the rest on onnxruntime.

The segments (placement.py) run in the graph's order; each hands its outputs on as numpy
arrays (TVM's CPU results leave through DLPack without a copy, and onnxruntime reads numpy
inputs in place). onnxruntime's sessions here do not spin: an intra-op pool spinning
after its call was seen to slow the TVM kernel that runs next 2-4x on two cores (issue
29: encodec-up2's layer 6.4 ms alone, 20 ms right after each onnxruntime call, 5.3 ms
with `session.intra_op.allow_spinning = 0`).
"""
from __future__ import annotations

import warnings

import onnx

from ..graph.errors import ArgumentError
from . import placement as _placement
from .onnxruntime_backend import OnnxRuntimeSession

ONNXRUNTIME = OnnxRuntimeSession.backend


class SplitSession:
    """Runs `model` with TVM sessions (from `open_tvm(sub_model)`) for the nodes in
    `kernel_nodes` (indices into the graph, with their layout Transposes) and onnxruntime
    for the rest. A TVM segment that fails to build, or builds without our kernel, runs on
    onnxruntime instead, with a `warning(text)` naming its nodes and the cause. With
    `measure_segments` (and static input shapes), each kernel's TVM segment is first timed
    against the same nodes on onnxruntime (segment_timing.py) and kept only where it is
    faster. Then the elementwise ops around the kernels kept join their segments
    (`placement.joined_elementwise`), and the rest of the graph runs in as few
    onnxruntime sessions as the cut allows. `placement_reasons` says why each node our
    kernel took runs on onnxruntime after all.

    Args:
      model: a model from `placement.normalized`.
      kernel_nodes: ConvTranspose nodes `placement.kernel_refusal` accepts.
      open_tvm: ModelProto -> a TVM session (`scheduled`, `backend`, `run`).
      threads: onnxruntime's intra-op threads (None: its default).
      folded: names of the nodes `placement.normalized` computed once (`FOLDED`).
      measure_segments: time each kernel's segment first (see above).
    """

    def __init__(self, model: onnx.ModelProto, kernel_nodes: set[int], open_tvm, *,
                 threads=None, warning=None, folded=(), measure_segments=True):
        from .tvm_backend import NodeArg

        names = _placement.node_names(model.graph)
        types = _placement.value_types(model)
        constants = {t.name for t in model.graph.initializer}
        self._inputs = [node_arg_of(NodeArg, v) for v in model.graph.input
                        if v.name not in constants]
        self._outputs = [node_arg_of(NodeArg, v) for v in model.graph.output]
        self.placement_reasons = {}

        def onnxruntime_of(segment):
            return OnnxRuntimeSession(_placement.segment_model(model, segment, types),
                                      threads=threads, spinning=False)

        def built(on_tvm, warn=True):
            """The TVM sessions of `on_tvm`'s segments, and the nodes whose segment built
            with our kernel (a failed one runs on onnxruntime; `warn`: with a warning)."""
            sessions, kept = {}, set(on_tvm)
            for segment in _placement.segments(model, on_tvm):
                if not segment.on_tvm:
                    continue
                try:
                    session = open_tvm(_placement.tvm_ready(
                        _nwc_between_kernels(_placement.segment_model(model, segment, types),
                                             segment)))
                    if not getattr(session, "scheduled", False):
                        raise RuntimeError("TVM built it without the scheduled kernel")
                except Exception as error:
                    reason = str(error).splitlines()[0] if str(error) else \
                        type(error).__name__
                    which = ", ".join(repr(names[i]) for i in segment.indices)
                    if warn and warning is not None:
                        warning(f"nodes {which} run on {ONNXRUNTIME}: {reason}")
                    self.placement_reasons.update((names[i], reason) for i in segment.indices)
                    kept -= set(segment.indices)
                    continue
                sessions[tuple(segment.indices)] = session
            return sessions, kept

        on_tvm = set(kernel_nodes) | _placement.layout_transposes(model, set(kernel_nodes))
        feeds = sample_feeds(self._inputs) if measure_segments else None
        if feeds is not None:
            # Each kernel's segment alone against the same nodes on onnxruntime
            # (segment_timing.py): one that loses goes back to onnxruntime.
            tvm_sessions, on_tvm = built(on_tvm)
            parts = _assembled(model, on_tvm, tvm_sessions, onnxruntime_of)
            if tvm_sessions:
                from .segment_timing import segment_times

                backend = next(iter(tvm_sessions.values())).backend
                measured = segment_times(parts, feeds, onnxruntime_of, median_times)
                for position, times in measured.items():
                    if times["onnxruntime"] >= times["tvm"]:
                        continue
                    segment = parts[position][0]
                    why = (f"measured faster on {ONNXRUNTIME}: "
                           f"{times['onnxruntime'] * 1e3:.3g} ms a call against "
                           f"{times['tvm'] * 1e3:.3g} ms on {backend}")
                    self.placement_reasons.update((names[i], why) for i in segment.indices)
                    on_tvm -= set(segment.indices)
        # The activations, residual Adds, Pads and Slices around the kernels join their
        # segments (placement.joined_elementwise): no round trip to onnxruntime for them.
        joined = _placement.joined_elementwise(model, on_tvm, types)
        tvm_sessions, kept = built(on_tvm | joined, warn=not joined)
        failed = (on_tvm | joined) - kept
        if failed and joined:
            # A segment that failed with the ops around its kernels: its kernels again
            # alone, in segments of their own (what TVM took before they joined).
            tvm_sessions, kept = built((kept - joined) | (on_tvm & failed))
            kept |= joined - failed
            tvm_sessions, kept = built(kept, warn=False) if joined - failed else \
                (tvm_sessions, kept)
        on_tvm = kept
        # Reasons are for the kernels' nodes that run on onnxruntime after all.
        self.placement_reasons = {names[i]: self.placement_reasons[names[i]]
                                  for i in set(kernel_nodes) - on_tvm
                                  if names[i] in self.placement_reasons}
        parts = _assembled(model, on_tvm, tvm_sessions, onnxruntime_of)
        tvm_backend = next((s.backend for s in tvm_sessions.values()), None)
        self._parts = [(segment.inputs, segment.outputs, session)
                       for segment, session in parts]
        self.placement = dict.fromkeys(folded, _placement.FOLDED)
        self.placement.update((name, tvm_backend if index in on_tvm else ONNXRUNTIME)
                              for index, name in enumerate(names))
        backends = [tvm_backend] if tvm_sessions else []
        if any(isinstance(session, OnnxRuntimeSession) for _, _, session in self._parts):
            backends.append(ONNXRUNTIME)
        self.backend = "+".join(backends)
        self.scheduled = bool(tvm_sessions)

    def run(self, output_names, feeds):
        """Outputs named by `output_names` (None: all), for `feeds` keyed by input name."""
        missing = [arg.name for arg in self._inputs if arg.name not in feeds]
        if missing:
            raise ArgumentError(f"feeds lack the model's inputs {missing}; inputs: "
                                f"{[arg.name for arg in self._inputs]}")
        values = dict(feeds)
        for inputs, outputs, session in self._parts:
            results = session.run(outputs, {name: values[name] for name in inputs})
            values.update(zip(outputs, results))
        names = [arg.name for arg in self._outputs] if output_names is None else output_names
        unknown = [name for name in names if name not in values]
        if unknown:
            raise ArgumentError(f"output {unknown[0]!r} is not an output of the model; "
                                f"outputs: {[arg.name for arg in self._outputs]}")
        return [values[name] for name in names]

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)


# Kernels a TVM segment must hold to run NWC between them (nwc_inside.py). Whole models,
# TVM alone, same process, alternated (tools/models/nwc_inside_ratio.py, Zen 4,
# 2026-12-06 16:00-16:08, load < 1): EnCodec's decoder 16.76 -> 15.14 ms (1.11x),
# Demucs-v2's 36.08 -> 33.50 (1.08x), HiFi-GAN V1 143.5 -> 141.1 (1.02x); but a segment
# of one conv pays a real Transpose at its input and output: 0.36-0.99x on EnCodec's
# layers.
NWC_INSIDE_KERNELS = 2


def _nwc_between_kernels(sub_model, segment):
    """`sub_model` with its tensors NWC between its convolutions (nwc_inside.py) where the
    segment holds NWC_INSIDE_KERNELS of them or more; as it is otherwise."""
    if sum(node.op_type == "ConvTranspose" for node in segment.nodes) < NWC_INSIDE_KERNELS:
        return sub_model
    from .nwc_inside import nwc_inside

    return nwc_inside(sub_model)


def _assembled(model, on_tvm, tvm_sessions, onnxruntime_of):
    """(segment, session) in the graph's order: each run of TVM nodes with the session
    built for it, each run of the other nodes in one onnxruntime session."""
    return [(segment, tvm_sessions[tuple(segment.indices)] if segment.on_tvm
             else onnxruntime_of(segment))
            for segment in _placement.segments(model, on_tvm)]


def node_arg_of(node_arg, value: onnx.ValueInfoProto):
    """A graph input or output as a `node_arg` (NodeArg: name, dims, onnxruntime's type
    string), free dims as their names."""
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor.shape.dim]
    name = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    type_name = {"float32": "float", "float64": "double"}.get(name, name)
    return node_arg(value.name, dims, f"tensor({type_name})")


def warn_each(category):
    """A `warning` callback for SplitSession that raises `category` warnings."""
    return lambda text: warnings.warn(f"backend='auto': {text}", category, stacklevel=4)


def sample_feeds(inputs, seed=0):
    """Random feeds for inputs of static shape (None where one has a free dimension)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in inputs:
        if not all(isinstance(d, int) for d in arg.shape):
            return None
        dtype = {"float": "float32", "double": "float64"}.get(arg.type[7:-1], arg.type[7:-1])
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            return None
        feeds[arg.name] = rng.standard_normal(arg.shape).astype(dtype) \
            if dtype.kind == "f" else np.zeros(arg.shape, dtype)
    return feeds


def median_times(sessions: dict, feeds, *, budget_s: float = 3.0, pause_s: float = 0.05,
                 clock=None) -> dict:
    """Median seconds of a call of each session, timed as a user of one library alone
    sees it: isolated blocks (a pause for the other library's threads to stop spinning,
    one untimed call, then timed calls), alternated twice, within about `budget_s`."""
    import statistics
    import time

    clock = clock or time.perf_counter
    times = {name: [] for name in sessions}
    calls = 3
    for round_ in range(2):
        for name, session in sessions.items():
            time.sleep(pause_s)
            start = clock()
            session.run(None, feeds)
            first = clock() - start
            if round_ == 0 and first * calls * 2 * len(sessions) > budget_s:
                calls = 1
            for _ in range(calls):
                start = clock()
                session.run(None, feeds)
                times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}
