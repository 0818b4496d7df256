"""The exceptions of the public contract: every mistake is a `ValueError` subclass.

A message names the argument, the value given and what is allowed.
"""
from __future__ import annotations


class Conv1DTransposeError(ValueError):
    """Base class: an invalid call, raised before anything compiles or allocates."""


class ArgumentError(Conv1DTransposeError):
    """An argument has the wrong type, form or value (strides, padding, data_format, ...)."""


class ShapeError(Conv1DTransposeError):
    """Shapes do not fit together (ranks, channels, output width, sizes)."""


class DtypeError(Conv1DTransposeError):
    """A dtype is unsupported, or input and filters disagree."""


class BackendError(Conv1DTransposeError):
    """A backend cannot run this call here (missing dtype, library, device or target)."""


def describe(value) -> str:
    """Short repr of a user value for an error message (never a whole array)."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None and getattr(value, "ndim", 0) > 1:
        return f"array of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
