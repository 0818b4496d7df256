"""conv1d-transpose: TensorFlow's tf.nn.conv1d_transpose, exact, as ONNX, compiled by TVM.

    >>> import numpy as np, conv1d_transpose as ct
    >>> x = np.ones((1, 4, 2), np.float32); f = np.ones((3, 5, 2), np.float32)
    >>> ct.conv1d_transpose(x, f, [1, 8, 5], strides=2).shape
    (1, 8, 5)
"""
from .graph.errors import (ArgumentError, BackendError, Conv1DTransposeError, DtypeError,
                           ShapeError)
from .graph.reference import reference_conv1d_transpose
from .graph.spec import Conv1DTransposeSpec
from .op import Conv1DTranspose, conv1d_transpose
from .runtime.session import InferenceSession

__version__ = "0.1.0"

__all__ = [
    "ArgumentError", "BackendError", "Conv1DTranspose", "Conv1DTransposeError",
    "Conv1DTransposeSpec", "DtypeError", "InferenceSession", "ShapeError",
    "conv1d_transpose", "reference_conv1d_transpose",
]
