"""runtime/: sessions over onnxruntime and TVM artifacts, and the backend choice."""
from .onnxruntime_backend import OnnxRuntimeSession
from .session import (BACKENDS, BackendFallbackWarning, InferenceSession, open_session,
                      open_tvm_session)

__all__ = ["BACKENDS", "BackendFallbackWarning", "InferenceSession", "OnnxRuntimeSession",
           "open_session", "open_tvm_session"]
