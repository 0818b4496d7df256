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

from ..compile.artifact import ModelSource
from ..graph.errors import ArgumentError, BackendError, Conv1DTransposeError, describe
from ..graph.onnx_export import spec_from_model
from .onnxruntime_backend import DTYPES as ONNXRUNTIME_DTYPES
from .onnxruntime_backend import OnnxRuntimeSession

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
    if backend == "tvm":
        return _tvm_session(source or load_model(model_or_path), target, **tvm_options)

    model = source or load_model(model_or_path)
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
        self._session = open_session(model_or_path, backend, target, threads=threads,
                                     cache_dir=cache_dir, targets=targets)

    @property
    def backend(self) -> str:
        """Which backend runs this session, e.g. 'onnxruntime:cpu' or 'tvm:host'."""
        return self._session.backend

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
