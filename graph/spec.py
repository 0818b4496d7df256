"""`Conv1DTransposeSpec`: one validated, immutable description of a call.

graph/ computes it (`arguments.make_spec`); compile/ and runtime/ read it and never redo
the shape or padding arithmetic.
"""
from __future__ import annotations

import dataclasses
import json

from . import shapes

DATA_FORMATS = ("NWC", "NCW")
DTYPES = ("float16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class Conv1DTransposeSpec:
    """Everything that determines the op's output, in TF's terms.

    Widths and channels are those of the user's tensors, whatever the layout:
    input `[batch, in_width, in_channels]` (NWC) or `[batch, in_channels, in_width]`
    (NCW); filters `[kernel_width, out_channels, in_channels]`.
    """

    batch: int
    in_width: int
    in_channels: int
    out_width: int
    out_channels: int
    kernel_width: int
    stride: int
    dilation: int
    padding: str
    data_format: str
    dtype: str
    pad_begin: int
    pad_end: int
    output_padding: int

    def __post_init__(self):
        # Invariants only: user-facing validation with good messages is in arguments.py.
        if self.padding not in shapes.PADDINGS or self.data_format not in DATA_FORMATS:
            raise AssertionError(f"spec built with unchecked arguments: {self}")
        expected = shapes.transpose_padding(self.in_width, self.out_width, self.kernel_width,
                                            self.stride, self.dilation, self.padding)
        if (self.pad_begin, self.pad_end, self.output_padding) != expected:
            raise AssertionError(f"spec padding disagrees with shapes.transpose_padding: {self}")

    @property
    def dilated_kernel_width(self) -> int:
        return shapes.dilated_kernel_width(self.kernel_width, self.dilation)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return shapes.layout_shape(self.data_format, self.batch, self.in_width, self.in_channels)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return shapes.layout_shape(self.data_format, self.batch, self.out_width,
                                   self.out_channels)

    @property
    def filters_shape(self) -> tuple[int, int, int]:
        return (self.kernel_width, self.out_channels, self.in_channels)

    @property
    def is_empty(self) -> bool:
        """True when nothing contributes: the output is all zeros (or has no elements)."""
        return 0 in (self.batch, self.in_width, self.in_channels, self.out_width,
                     self.out_channels, self.kernel_width)

    @property
    def flops(self) -> int:
        """Multiply-adds times two, counting every tap: 2*N*W*Cin*Cout*K (the workloads'
        formula)."""
        return 2 * self.batch * self.in_width * self.in_channels * self.out_channels * self.kernel_width

    def tf_arguments(self) -> dict:
        """The call's TensorFlow arguments (for ONNX metadata and messages)."""
        return {
            "output_shape": list(self.output_shape),
            "strides": self.stride,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilations": self.dilation,
        }

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Conv1DTransposeSpec":
        return cls(**json.loads(text))
