"""Validation of TensorFlow-style arguments into a `Conv1DTransposeSpec`.

Every bad argument raises a `ValueError` subclass naming the argument, the value and
what is allowed, before anything is compiled or allocated: also where TensorFlow itself
aborts the process (a 2-element output_shape) or silently accepts (a batch stride).
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from . import shapes
from .errors import ArgumentError, DtypeError, ShapeError, describe
from .spec import DATA_FORMATS, DTYPES, Conv1DTransposeSpec

# A tensor of more elements than this is refused up front: it would not be addressable
# with the 32-bit indices that ONNX Runtime's and TVM's kernels use for one dimension
# product, and would take > 8 GiB in float32.
MAX_ELEMENTS = 2**31 - 1


def normalize_padding(padding) -> str:
    """'SAME' or 'VALID'; lower case is accepted too (TF itself rejects it)."""
    if isinstance(padding, str) and padding.upper() in shapes.PADDINGS:
        return padding.upper()
    raise ArgumentError(f"padding={describe(padding)} is not supported; "
                        f"allowed: 'SAME' or 'VALID' (any case)")


def normalize_data_format(data_format) -> str:
    """'NWC' or 'NCW' (any case); TF's 2-D names such as 'NHWC' are refused."""
    if isinstance(data_format, str) and data_format.upper() in DATA_FORMATS:
        return data_format.upper()
    raise ArgumentError(f"data_format={describe(data_format)} is not supported; "
                        f"allowed: 'NWC' or 'NCW'")


def _as_int(value, argument: str, given) -> int:
    # bool is an int in Python but never a meaningful stride or width.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{argument}={describe(given)} must hold integers, "
                            f"got {type(value).__name__}")
    return operator.index(value)


def _int_sequence(value, argument: str) -> list[int]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ArgumentError(f"{argument}={describe(value)} must be an int or a 1-D sequence")
        items = value.tolist()
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return [_as_int(value, argument, value)]
    return [_as_int(item, argument, value) for item in items]


def normalize_window(value, argument: str, data_format: str, default: int | None = None) -> int:
    """Stride or dilation: an int, or a list of length 1 or 3 in `data_format`'s layout.

    In a length-3 list the batch and channel entries must be 1 (TF silently accepts a
    batch stride of 2 and ignores it; we refuse it).
    """
    if value is None and default is not None:
        return default
    items = _int_sequence(value, argument)
    if len(items) == 1:
        result = items[0]
    elif len(items) == 3:
        spatial = 1 if data_format == "NWC" else 2
        others = [items[i] for i in range(3) if i != spatial]
        if others != [1, 1]:
            raise ArgumentError(f"{argument}={describe(value)}: with 3 entries (layout "
                                f"{data_format}) the batch and channel entries must be 1")
        result = items[spatial]
    else:
        raise ArgumentError(f"{argument}={describe(value)} has {len(items)} entries; "
                            f"allowed: an int, or a list of 1 or 3 ints")
    if result < 1:
        raise ArgumentError(f"{argument}={describe(value)} must be >= 1, got {result}")
    return result


def normalize_dtype(dtype, argument: str) -> str:
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise DtypeError(f"{argument} has dtype {name}; allowed: {', '.join(DTYPES)} "
                         f"(ONNX ConvTranspose is float-only; bfloat16 has no backend here)")
    return name


def normalize_output_shape(output_shape) -> tuple[int, int, int]:
    items = _int_sequence(output_shape, "output_shape")
    if not isinstance(output_shape, (list, tuple, np.ndarray)) or len(items) != 3:
        raise ShapeError(f"output_shape={describe(output_shape)} must be 3 integers "
                         f"[batch, width, channels] (NWC) or [batch, channels, width] (NCW)")
    if any(item < 0 for item in items):
        raise ShapeError(f"output_shape={describe(output_shape)} has a negative entry")
    return tuple(items)


def as_array(value, argument: str) -> np.ndarray:
    """A numpy array from an array or array-like; Python floats become float32 as in TF."""
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ArgumentError(f"{argument}={describe(value)} is not an array: {error}") from None
    if array.dtype == np.float64 and not isinstance(value, np.generic):
        array = array.astype(np.float32)  # TF's convert_to_tensor default for Python floats
    if array.dtype == object or array.dtype.kind not in "biufc":
        raise DtypeError(f"{argument}={describe(value)} is not numeric (dtype {array.dtype})")
    return array


def _check_rank(shape, argument: str, layout: str) -> None:
    if len(shape) != 3:
        raise ShapeError(f"{argument} has shape {tuple(shape)} (rank {len(shape)}); "
                         f"it must be rank 3: {layout}")


# Tensors needing more than this fraction of the available memory are refused up front
# (the call would swap or be killed); requests under the floor skip reading /proc/meminfo.
MAX_MEMORY_FRACTION = 0.5
_MEMORY_CHECK_FLOOR = 64 * 2**20


def _check_memory(input_shape, filters_shape, out, dtype) -> None:
    need = np.dtype(dtype).itemsize * sum(int(np.prod(s, dtype=object))
                                          for s in (input_shape, filters_shape, out))
    if need <= _MEMORY_CHECK_FLOOR:
        return
    import psutil
    available = psutil.virtual_memory().available
    if need > MAX_MEMORY_FRACTION * available:
        raise ShapeError(f"output_shape={list(out)} with input {tuple(input_shape)} needs "
                         f"{need / 2**30:.2f} GiB for its tensors; only "
                         f"{available / 2**30:.2f} GiB of memory is available and at most "
                         f"{MAX_MEMORY_FRACTION:.0%} of it may be used")


def _check_size(shape, argument: str) -> None:
    count = int(np.prod(shape, dtype=object))
    if count > MAX_ELEMENTS:
        raise ShapeError(f"{argument} of shape {tuple(shape)} has {count} elements; "
                         f"at most {MAX_ELEMENTS} are allowed")


def make_spec(input_shape, filters_shape, output_shape, strides, padding="SAME",
              data_format="NWC", dilations=None, dtype="float32") -> Conv1DTransposeSpec:
    """Validate TF's arguments (as shapes) and return the spec.

    Args:
      input_shape: the input's shape, or None to derive it from `output_shape` (the
        forward conv1d of the output width gives the input width).
      filters_shape: `[kernel_width, out_channels, in_channels]`.
      output_shape, strides, padding, data_format, dilations: as in TF.
      dtype: the input's (and filters') dtype.
    Raises:
      ArgumentError, ShapeError, DtypeError (all ValueError).
    """
    data_format = normalize_data_format(data_format)
    padding = normalize_padding(padding)
    stride = normalize_window(strides, "strides", data_format)
    dilation = normalize_window(dilations, "dilations", data_format, default=1)
    dtype = normalize_dtype(dtype, "input")
    out = normalize_output_shape(output_shape)
    if data_format == "NWC":
        batch, out_width, out_channels = out
        layout = "[batch, in_width, in_channels] (NWC)"
    else:
        batch, out_channels, out_width = out
        layout = "[batch, in_channels, in_width] (NCW)"

    _check_rank(filters_shape, "filters", "[filter_width, output_channels, in_channels]")
    kernel_width, filter_out, in_channels = (int(v) for v in filters_shape)
    if filter_out != out_channels:
        raise ShapeError(f"output_shape={list(out)} has {out_channels} channels but filters "
                         f"of shape {tuple(filters_shape)} produce {filter_out}")

    if input_shape is None:
        in_width = shapes.input_width_for_output(out_width, kernel_width, stride,
                                                 dilation, padding)
        input_shape = (batch, in_width, in_channels) if data_format == "NWC" else \
            (batch, in_channels, in_width)
    _check_rank(input_shape, "input", layout)
    if data_format == "NWC":
        in_batch, in_width, channels = (int(v) for v in input_shape)
    else:
        in_batch, channels, in_width = (int(v) for v in input_shape)
    if channels != in_channels:
        raise ShapeError(f"input of shape {tuple(input_shape)} has {channels} channels but "
                         f"filters of shape {tuple(filters_shape)} expect {in_channels} "
                         f"(their last dimension)")
    if in_batch != batch:
        raise ShapeError(f"output_shape={list(out)} has batch {batch} but the input of "
                         f"shape {tuple(input_shape)} has batch {in_batch}")
    widths = shapes.valid_output_widths(in_width, kernel_width, stride, dilation, padding)
    # The forward conv1d must map the output width back to W, also for batch 0 or width 0
    # (TF's float32 kernel skips the check on empty tensors, its float16/float64 kernels
    # do not). An empty kernel has no forward conv: any width gives zeros, as in TF.
    if kernel_width > 0 and out_width not in widths:
        allowed = f"{widths.start}..{widths.stop - 1}" if len(widths) else "none"
        raise ShapeError(
            f"output_shape={list(out)}: width {out_width} is not valid for input width "
            f"{in_width} with padding={padding!r}, strides={stride}, kernel width "
            f"{kernel_width}, dilations={dilation}; allowed widths: {allowed}")
    for shape, name in ((input_shape, "input"), (filters_shape, "filters"), (out, "output_shape")):
        _check_size(shape, name)
    _check_memory(input_shape, filters_shape, out, dtype)

    pad_begin, pad_end, output_padding = shapes.transpose_padding(
        in_width, out_width, kernel_width, stride, dilation, padding)
    return Conv1DTransposeSpec(
        batch=batch, in_width=in_width, in_channels=in_channels, out_width=out_width,
        out_channels=out_channels, kernel_width=kernel_width, stride=stride,
        dilation=dilation, padding=padding, data_format=data_format, dtype=dtype,
        pad_begin=pad_begin, pad_end=pad_end, output_padding=output_padding)


def check_arrays(input, filters) -> tuple[np.ndarray, np.ndarray]:
    """Convert and check the two tensors: numeric, supported and equal dtypes."""
    input = as_array(input, "input")
    filters = as_array(filters, "filters")
    input_dtype = normalize_dtype(input.dtype, "input")
    filters_dtype = normalize_dtype(filters.dtype, "filters")
    if input_dtype != filters_dtype:
        raise DtypeError(f"input has dtype {input_dtype} but filters have dtype "
                         f"{filters_dtype}; they must be equal")
    return input, filters
