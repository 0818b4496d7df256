"""ONNX model -> Relax IRModule, through `legalize` first."""
from __future__ import annotations

import contextlib
import io
import warnings

import onnx

from ..graph.errors import ArgumentError
from .legalize import legalize_conv_transpose


def model_opset(model: onnx.ModelProto) -> int:
    """The opset of the default ONNX domain that `model` imports."""
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    raise ArgumentError("the ONNX model imports no opset of the default domain ('')")


def import_onnx(model: onnx.ModelProto):
    """A self-contained Relax module (`main` takes only the graph inputs) for `model`.

    Weights stay in the module as constants (`keep_params_in_input=False`), so the
    compiled library needs nothing but the graph inputs at run time.

    Raises:
      ShapeError / ArgumentError (ValueError) from legalization or a malformed model.
    """
    from tvm.relax.frontend.onnx import from_onnx

    if not isinstance(model, onnx.ModelProto):
        raise ArgumentError(f"import_onnx needs an onnx.ModelProto, got {type(model).__name__}")
    legal = legalize_conv_transpose(model)
    # The importer prints "Error converting operator ..." to stdout before raising (the
    # exception says it too): a library must not write to its user's stdout.
    # It also warns "Renaming name ..." for every value whose name is not an identifier
    # (all of torch's: "/model.0/Pad_output_0"): internal names, nothing a user can act on.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Renaming name ")
        return from_onnx(legal, opset=model_opset(legal), keep_params_in_input=False)
