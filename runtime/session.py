"""`InferenceSession`: onnxruntime's surface over our backends, and the backend choice.

Backends: 'onnxruntime' (CPU), 'tvm' (a compiled artifact for a target in targets.yaml),
and 'auto', which takes TVM on a target only where a scheduled kernel exists for the
model there (TVM's default lowering of ConvTranspose, zero insertion with no schedule,
ran a HiFi-GAN layer at 0.2 GFLOP/s against onnxruntime's 207: ~1000x slower) and
otherwise falls back to onnxruntime with a one-line warning that names the reason.
"""
from __future__ import annotations

import os
import warnings

import onnx

from ..compile.model_source import ModelSource
from ..graph.errors import ArgumentError, BackendError, Conv1DTransposeError, describe
from ..graph.onnx_export import spec_from_model
from .onnxruntime_backend import DTYPES as ONNXRUNTIME_DTYPES
from .onnxruntime_backend import OnnxRuntimeSession
from . import placement as _placement
from . import placement_memo as _placement_memo
from . import specialize as _specialize

BACKENDS = ("auto", "onnxruntime", "tvm")


class BackendFallbackWarning(UserWarning):
    """backend='auto' could not use TVM for a target and runs onnxruntime instead."""


def normalize_backend(backend) -> str:
    if isinstance(backend, str) and backend.lower() in BACKENDS:
        return backend.lower()
    raise ArgumentError(f"backend={describe(backend)} is not supported; "
                        f"allowed: {', '.join(repr(b) for b in BACKENDS)}")


def normalize_target(target) -> str:
    if isinstance(target, str) and target:
        return target
    raise ArgumentError(f"target={describe(target)} must be the name of a target in "
                        f"targets.yaml, e.g. 'host'")


def load_model(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, ModelSource):
        return model_or_path.model()
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model_or_path))
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.isfile(path):
            raise ArgumentError(f"model_or_path={path!r} is not a file")
        try:
            return onnx.load(path)
        except Exception as error:
            raise ArgumentError(f"model_or_path={path!r} is not an ONNX model: {error}") from None
    raise ArgumentError(f"model_or_path={describe(model_or_path)} must be an onnx.ModelProto, "
                        f"serialized bytes or a path to a .onnx file")


def open_tvm_session(model_or_artifact, target="host", *, targets=None, cache_dir=None,
                     threads=None):
    """A TVM session for `target`, with onnxruntime's surface: a `TVMSession` on this
    machine, or, for a target with an `rpc:` block, an `RPCSession` on its remote device.

    Args and Raises: as `TVMSession` (tvm_backend.py) and `RPCSession` (rpc_backend.py).
    """
    from ..compile.targets import get_target

    entry = get_target(target, targets)  # targets.yaml read once (~15 ms), the entry passed on
    options = {"targets": targets, "cache_dir": cache_dir, "threads": threads}
    if entry.rpc:
        from .rpc_backend import RPCSession
        return RPCSession(model_or_artifact, entry, **options)
    from .tvm_backend import TVMSession
    return TVMSession(model_or_artifact, entry, **options)


def _tvm_session(model, target, **options):
    try:
        import tvm  # noqa: F401  (a broken TVM install fails here, not halfway through)
        from . import rpc_backend, tvm_backend  # noqa: F401
    except (ImportError, OSError) as error:
        raise BackendError(f"TVM is not importable: {error}") from None
    try:
        return open_tvm_session(model, target, **options)
    except Conv1DTransposeError:
        raise
    except Exception as error:
        if type(error).__name__ == "OpNotImplemented":  # tvm.error: a limit of TVM's, not a bug
            raise BackendError(f"TVM cannot import this model: "
                               f"{str(error).splitlines()[0]}") from error
        # Anything else is a bug of ours (a schedule that does not fit a shape, say): say
        # so in words, keep the details on the chained exception, and let `auto` fall back.
        raise BackendError(
            f"the TVM build of this model on target {target!r} failed with an internal "
            f"error ({type(error).__name__}), a bug in conv1d-transpose: please report it "
            f"with the model") from error


def _onnxruntime_importable() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def open_session(model_or_path, backend="auto", target="host", *, threads=None,
                 cache_dir=None, targets=None):
    """The session object of the chosen backend (see the module docstring).

    `model_or_path` may also be a `ModelSource`: TVM then makes the model only when its
    cache has no artifact for it."""
    backend = normalize_backend(backend)
    target = normalize_target(target)
    source = model_or_path if isinstance(model_or_path, ModelSource) else None
    if backend == "onnxruntime":
        return OnnxRuntimeSession(load_model(source) if source else model_or_path,
                                  threads=threads)
    tvm_options = {"cache_dir": cache_dir, "targets": targets, "threads": threads}
    if isinstance(model_or_path, (str, os.PathLike)) and os.path.isdir(model_or_path):
        # A compiled artifact: only TVM can run it, and there is no model to fall back on.
        return _tvm_session(os.fspath(model_or_path), target, **tvm_options)
    model = source or load_model(model_or_path)
    # A free dimension our kernel needs fixed: one TVM build for every width where TVM
    # takes the model as it is (symbolic_session.py), else one static session per input
    # shape.
    if source is None and _specialize.waits_on_shapes(model,
                                                      symbolic_batch=backend == "tvm"):
        from .symbolic_session import open_symbolic
        symbolic = open_symbolic(
            model, backend if _onnxruntime_importable() else "tvm",
            lambda whole: _tvm_session(whole, target, **tvm_options),
            lambda original: OnnxRuntimeSession(original, threads=threads),
            margin=SPLIT_MARGIN, warning=BackendFallbackWarning,
            memo=_memo_of(model, target, tvm_options, threads) if backend == "auto"
            else None)
        if symbolic is not None:
            return symbolic
        from .specialized_session import SpecializedSession
        return SpecializedSession(model, lambda static: open_session(
            static, backend, target, threads=threads, cache_dir=cache_dir, targets=targets))
    if backend == "tvm":
        return _tvm_session(model, target, **tvm_options)

    if source is None:
        placed = _place_nodes(model, target, tvm_options, threads)
        if placed is not None:
            return placed
    spec = source.spec if source is not None and source.spec is not None else \
        spec_from_model(load_model(model))
    onnxruntime_has_dtype = spec is None or spec.dtype in ONNXRUNTIME_DTYPES["cpu"]
    try:
        session = _tvm_session(model, target, **tvm_options)
    except Exception as error:  # any TVM failure means: fall back, and say why
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not onnxruntime_has_dtype:
            raise BackendError(f"no backend can run {spec.dtype} on target {target!r}: "
                               f"onnxruntime:cpu lacks it and tvm failed: {reason}") from None
    else:
        if getattr(session, "scheduled", False):
            return session
        lacking = None if onnxruntime_has_dtype else f"onnxruntime:cpu lacks {spec.dtype}"
        if lacking is None and not _onnxruntime_importable():
            lacking = "onnxruntime is not importable"
        if lacking:
            warnings.warn(f"backend='auto' runs {session.backend} with TVM's unscheduled "
                          f"default kernel (slow): {lacking}", BackendFallbackWarning,
                          stacklevel=3)
            return session
        reason = f"no scheduled TVM kernel for this model on target {target!r} yet"
    warnings.warn(f"backend='auto' uses onnxruntime:cpu instead of tvm:{target}: {reason}",
                  BackendFallbackWarning, stacklevel=3)
    return OnnxRuntimeSession(load_model(model), threads=threads)


def _place_nodes(model, target, tvm_options, threads):
    """`auto` for a model with compute-heavy nodes our kernel does not take (placement.py):
    onnxruntime for those, TVM for the ConvTranspose and Conv nodes it does take
    (SplitSession: each TVM segment kept only where it measures faster than the same nodes
    on onnxruntime, the split only where it measures faster than onnxruntime alone), or
    onnxruntime alone where it takes none, without importing the model into TVM (which
    cannot import LSTM, for one). None where every such node is ours and `normalized`
    changed nothing: then the whole model goes to TVM, as before; or where onnxruntime
    cannot run the rest."""
    if not _onnxruntime_importable():
        return None
    original, model = model, _placement.normalized(model)
    types = _placement.value_types(model)
    heavy = {index: _placement.kernel_refusal(node, model, types)
             for index, node in enumerate(model.graph.node)
             if node.op_type in _placement.COMPUTE_HEAVY}
    refused = {index: reason for index, reason in heavy.items() if reason}
    folded = _placement.folded_nodes(original, model)
    rewritten = [(node.name, node.op_type) for node in model.graph.node] != \
        list(zip(_placement.node_names(original.graph),
                 [node.op_type for node in original.graph.node]))
    if not refused and not rewritten:
        return None
    kernels = set(heavy) - set(refused)
    try:
        if kernels:
            from .split_session import SplitSession, warn_each
            names = set(_placement.node_names(original.graph))  # not the rewrite's own
            model_names = _placement.node_names(model.graph)

            def split(measure_segments, kernel_nodes=kernels):
                session = SplitSession(
                    model, kernel_nodes, lambda sub: _tvm_session(sub, target, **tvm_options),
                    threads=threads, warning=warn_each(BackendFallbackWarning),
                    folded=folded, measure_segments=measure_segments)
                # The kernels on TVM, as indices into `model` (what placement_memo keeps:
                # the names below are the original graph's).
                session.tvm_kernels = {i for i in kernel_nodes if str(session.placement.get(
                    model_names[i], "")).startswith("tvm")}
                session.placement = {name: backend for name, backend
                                     in session.placement.items() if name in names}
                session.placement_reasons = {name: reason for name, reason
                                             in session.placement_reasons.items()
                                             if name in names}
                return session

            # What an earlier process measured for this model on this machine, if any
            # (placement_memo.py): the same outcome without the timings and the builds of
            # the segments that lost.
            memo = _memo_of(original, target, tvm_options, threads)
            remembered = memo and _placement_memo.read(*memo)
            if remembered:
                return _remembered(remembered, original, model, kernels, split, threads,
                                   target)
            # First every kernel with the ops around it on TVM, unmeasured: a vocoder whose
            # convolutions all win (HiFi-GAN) opens with one build. Only where that loses to
            # onnxruntime alone is each kernel's segment timed, the losers given back.
            first = split(measure_segments=False)
            chosen = _faster_of(first, original, threads, warn=False)
            if chosen is not first:
                chosen = _faster_of(split(measure_segments=True), original, threads)
            if memo and getattr(chosen, "measured", None):
                _remember(memo, chosen, model)
            return chosen
        session = OnnxRuntimeSession(original, threads=threads)
    except BackendError:  # onnxruntime lacks a dtype (float64): TVM whole, as before
        return None
    names = _placement.node_names(model.graph)
    reasons = [f"node {names[index]!r}: {reason}" for index, reason in refused.items()]
    more = f" and {len(reasons) - 3} more" if len(reasons) > 3 else ""
    warnings.warn(f"backend='auto' uses onnxruntime:cpu instead of tvm:{target}: no "
                  f"compute-heavy node of this model has a scheduled TVM kernel "
                  f"({'; '.join(reasons[:3])}{more})", BackendFallbackWarning, stacklevel=4)
    return session


def _memo_of(model, target, tvm_options, threads):
    """(cache dir, key) under which `auto`'s outcome for `model` is remembered, or None
    where the cache or the target cannot be read (the TVM path then says why)."""
    from ..compile.cache import open_cache_dir
    from ..compile.targets import get_target

    try:
        entry = get_target(target, tvm_options["targets"])
        return (open_cache_dir(tvm_options["cache_dir"]),
                _placement_memo.key(model.SerializeToString(), dict(entry.target), threads))
    except Conv1DTransposeError:
        return None


def _remember(memo, session, model):
    names = _placement.node_names(model.graph)
    if isinstance(session, OnnxRuntimeSession):
        _placement_memo.write(*memo, "onnxruntime", times=session.measured)
        return
    on_tvm = [names[i] for i in session.tvm_kernels]
    _placement_memo.write(*memo, "split", tvm_nodes=on_tvm, times=session.measured,
                          reasons=session.placement_reasons)


def _remembered(record, original, model, kernels, split, threads, target):
    """The session of a remembered outcome: onnxruntime alone (with the warning the
    measurement gave), or the split with the kernels that won on TVM."""
    times = record["times"]
    if record["choice"] == "onnxruntime":
        _warn_alone(times, f"tvm:{target} (at {record['measured_at']}, remembered in the "
                           f"artifact cache; {_placement_memo.ENV_REMEASURE}=1 measures again)")
        session = OnnxRuntimeSession(original, threads=threads)
        session.measured = times
        return session
    names = _placement.node_names(model.graph)
    on_tvm = set(record["tvm_nodes"])
    session = split(False, {i for i in kernels if names[i] in on_tvm})
    session.placement_reasons.update((name, reason) for name, reason
                                     in record["reasons"].items()
                                     if name in session.placement
                                     and name not in session.placement_reasons)
    session.measured = times
    return session


# How much faster than onnxruntime alone a split must measure at open to be kept. The
# measurement takes ~3 s on a machine that may be busy: on a shared 2-vCPU VM two
# back-to-back measurements of EnCodec's split against onnxruntime alone read 0.87x and
# 1.02x, and a split measured faster at open ran 0.73-0.86x onnxruntime in the bench
# that followed (2026-12-06 11:55 and 12:08 UTC). Near a tie, onnxruntime alone is the
# safe side of "never slower than onnxruntime".
SPLIT_MARGIN = 1.1


def _faster_of(split, model, threads, warn=True):
    """The split session, or onnxruntime alone where that measured faster on this machine
    (with a warning that says so): under `auto` no model may run slower than onnxruntime
    alone, and a model's split can lose where its convolutions are small and its
    crossings many. Both run on random feeds (a model with a free dimension is not
    timed: its split is kept)."""
    from .split_session import median_times, sample_feeds

    if not getattr(split, "scheduled", False):
        return split
    feeds = sample_feeds(split.get_inputs())
    if feeds is None:
        return split
    alone = OnnxRuntimeSession(model, threads=threads)
    times = median_times({"split": split, "alone": alone}, feeds)
    if times["split"] * SPLIT_MARGIN <= times["alone"]:
        split.measured = times
        return split
    alone.measured = times
    if warn:
        _warn_alone(times, split.backend)
    return alone


def _warn_alone(times, split_backend):
    """The warning of `auto` taking onnxruntime alone, with the times that decided it."""
    warnings.warn(f"backend='auto' runs this model on onnxruntime:cpu alone: it measured "
                  f"{times['alone'] * 1e3:.3g} ms a call on this machine against "
                  f"{times['split'] * 1e3:.3g} ms with {split_backend}",
                  BackendFallbackWarning, stacklevel=6)


class InferenceSession:
    """Like `onnxruntime.InferenceSession`, over any of our backends.

    Args:
      model_or_path: onnx.ModelProto, serialized bytes, or a path to a .onnx file
        (or, for backend='tvm', an artifact directory made by `conv1d-transpose compile`).
      backend: 'auto' (default), 'onnxruntime' or 'tvm'.
      target: a target name from targets.yaml ('host' by default).
      threads: worker threads (None: one per physical core, onnxruntime's default);
        TVM's pool is process-wide, so the last TVM session made decides its size.
      cache_dir: artifact cache for TVM builds (default: the user cache dir).
      targets: path to a targets.yaml of your own.
    """

    def __init__(self, model_or_path, backend="auto", target="host", *, threads=None,
                 cache_dir=None, targets=None):
        self._model_or_path, self._placement = model_or_path, None
        self._session = open_session(model_or_path, backend, target, threads=threads,
                                     cache_dir=cache_dir, targets=targets)

    @property
    def backend(self) -> str:
        """Which backend runs this session, e.g. 'onnxruntime:cpu' or 'tvm:host'."""
        return self._session.backend

    @property
    def placement(self) -> dict[str, str]:
        """Node name -> the backend that runs it ('tvm:host', 'onnxruntime:cpu'); nodes
        without a name are called `<op_type>_<index>`. Empty for a compiled artifact,
        which keeps no graph."""
        found = getattr(self._session, "placement", None) or self._placement
        if found is None:
            source = self._model_or_path
            if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
                found = {}
            else:
                graph = load_model(source).graph
                found = dict.fromkeys(_placement.node_names(graph), self.backend)
            self._placement = found
        return dict(found)

    @property
    def placement_reasons(self) -> dict[str, str]:
        """Node name -> why it runs on onnxruntime although our kernel took it: its TVM
        segment failed to build, or onnxruntime ran that segment faster when the session
        opened (both times given). Empty where no split was made."""
        return dict(getattr(self._session, "placement_reasons", None) or {})

    @property
    def specialized(self) -> dict | None:
        """None where the model runs as given. A model with a free dimension that our
        kernel needs fixed runs as one static model per input shape (`placement` and
        `backend` are then the latest call's): {"inputs": the latest call's input shapes,
        "held": the shapes held open, least recently used first, "limit": how many}."""
        return getattr(self._session, "specialized", None)

    @property
    def width_checks(self) -> dict | None:
        """None unless `auto` runs a dynamic-width model from one TVM build
        (runtime/symbolic_session.py): then {width class: {"backend": where that class
        runs, "ms": {backend: median ms a call measured on its first call}}}, a class being
        each free dimension's bit length per input (`placement` and `backend` are the
        latest call's)."""
        return getattr(self._session, "width_checks", None)

    @property
    def emulated(self) -> bool:
        """True on an emulated device: its timings say nothing about real hardware."""
        return getattr(self._session, "emulated", False)

    def run(self, output_names, feeds):
        """Run the model: `output_names` (None for all) and a dict of input name -> array."""
        return self._session.run(output_names, feeds)

    def get_inputs(self):
        return self._session.get_inputs()

    def get_outputs(self):
        return self._session.get_outputs()
