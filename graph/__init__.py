"""graph/: TensorFlow's arguments -> one validated spec -> an ONNX model."""
from .arguments import check_arrays, make_spec
from .errors import (ArgumentError, BackendError, Conv1DTransposeError, DtypeError,
                     ShapeError)
from .onnx_export import DEFAULT_OPSET, FORMS, SUPPORTED_OPSETS, build_model, spec_from_model
from .reference import TOLERANCES, max_error, reference_conv1d_transpose
from .spec import DATA_FORMATS, DTYPES, Conv1DTransposeSpec

__all__ = [
    "ArgumentError", "BackendError", "Conv1DTransposeError", "Conv1DTransposeSpec",
    "DATA_FORMATS", "DEFAULT_OPSET", "DTYPES", "DtypeError", "FORMS", "SUPPORTED_OPSETS",
    "ShapeError", "TOLERANCES", "build_model", "check_arrays", "make_spec", "max_error",
    "reference_conv1d_transpose", "spec_from_model",
]
