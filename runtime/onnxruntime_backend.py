"""The onnxruntime backend: the fallback, and the reference backend in benchmarks."""
from __future__ import annotations

import os

import onnx

from ..graph.errors import BackendError

# onnxruntime's CPU execution provider registers ConvTranspose for float and float16
# only (measured: float64 fails with NOT_IMPLEMENTED when the session is created).
DTYPES = {"cpu": ("float16", "float32")}


def _model_bytes(model_or_path) -> bytes | str:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path.SerializeToString()
    if isinstance(model_or_path, (bytes, bytearray)):
        return bytes(model_or_path)
    return os.fspath(model_or_path)


class OnnxRuntimeSession:
    """An `onnxruntime.InferenceSession` on the CPU, with errors in our terms.

    Args:
      model_or_path: ModelProto, serialized bytes or a path to a .onnx file.
      threads: intra-op threads (None: onnxruntime's default, one per core).
      spinning: let the intra-op pool spin after a call (onnxruntime's default). Off
        where TVM's threads run between our calls (split_session.py).
    """

    backend = "onnxruntime:cpu"

    def __init__(self, model_or_path, *, threads: int | None = None, spinning: bool = True):
        try:
            import onnxruntime
        except ImportError as error:  # pragma: no cover - a core dependency
            raise BackendError(f"onnxruntime is not importable: {error}") from None
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = threads
        try:
            self._session = onnxruntime.InferenceSession(
                _model_bytes(model_or_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own pybind11 exception types
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            if "NOT_IMPLEMENTED" in text:
                raise BackendError(
                    f"{self.backend} cannot run this model: {text}. Its CPU kernels cover "
                    f"ConvTranspose for {', '.join(DTYPES['cpu'])} only; use backend='tvm' "
                    f"for float64") from None
            raise BackendError(f"{self.backend} cannot load this model: {text}") from None

    def run(self, output_names, feeds):
        return self._session.run(output_names, feeds)

    def get_inputs(self):
        return self._session.get_inputs()

    def get_outputs(self):
        return self._session.get_outputs()
