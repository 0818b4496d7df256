"""Sweeps: sets of valid tf.nn.conv1d_transpose layers that cover the contract.

The one generator of layer configurations for the tests (conformance, kernels, devices)
and the portability matrix (`conv1d_transpose.portability`). Each sweep yields `Layer`s:
a call's shapes and window without a dtype, so one sweep runs in every dtype.

- `foundation_sweep()`: K 1..6, s 1..5, d 1..3, SAME and VALID, every valid output width
  for input widths 1 and 4, both layouts, batch cycling 1, 2, 0, two input and three
  output channels; then empty widths and an empty kernel (2,166 layers).
- `channel_sweep()`: every (in, out) pair of channel counts 1, 2, 3, 5, 7 on rotating
  picks of the same grid, then ISTFT-like layers (one output channel, K a multiple of s).
- `small_sweep()`: each (K, s, d) once, with rotating padding, widths, layout and batch
  (90 layers: few enough to compile each one).

Valid output widths come from `shapes.valid_output_widths` (TF's rule), so every layer
is a call TF accepts.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator

import numpy as np

from . import shapes
from .arguments import make_spec
from .spec import DATA_FORMATS, Conv1DTransposeSpec

# The grid every sweep draws from: every phase-decomposition case (K < s, K a multiple of
# s or not, dilation sharing a factor with the stride) appears in it.
KERNEL_WIDTHS = range(1, 7)
STRIDES = range(1, 6)
DILATIONS = range(1, 4)
# Input widths: one row (a single contribution per tap) and several.
WIDTHS = (1, 4)
IN_CHANNELS, OUT_CHANNELS = 2, 3
# Channel counts of the channel sweep: from one (an ISTFT's one output channel, a mono
# input) through small odd counts that fill no vector of any CPU.
CHANNEL_COUNTS = (1, 2, 3, 5, 7)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One call's geometry, in the order and terms of `Conv1DTransposeSpec` (no dtype).

    `dataclasses.astuple(layer)` is (batch, in_width, in_channels, out_width,
    out_channels, kernel_width, stride, dilation, padding, data_format).
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

    @property
    def name(self) -> str:
        """'N1-W4-O8-K3-s2-d1-SAME-NWC-ci2-co3'."""
        return (f"N{self.batch}-W{self.in_width}-O{self.out_width}-K{self.kernel_width}"
                f"-s{self.stride}-d{self.dilation}-{self.padding}-{self.data_format}"
                f"-ci{self.in_channels}-co{self.out_channels}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return shapes.layout_shape(self.data_format, self.batch, self.in_width,
                                   self.in_channels)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return shapes.layout_shape(self.data_format, self.batch, self.out_width,
                                   self.out_channels)

    @property
    def filters_shape(self) -> tuple[int, int, int]:
        return (self.kernel_width, self.out_channels, self.in_channels)

    def spec(self, dtype: str = "float32") -> Conv1DTransposeSpec:
        return make_spec(self.input_shape, self.filters_shape, self.output_shape, self.stride,
                         self.padding, self.data_format, self.dilation, dtype)

    def arrays(self, dtype: str = "float32", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Random (input, filters) for this layer: `random_arrays` of its shapes."""
        return random_arrays(self.input_shape, self.filters_shape, dtype, seed)


def random_arrays(input_shape, filters_shape, dtype, seed: int = 0) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Standard-normal input and filters, drawn in that order from `default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(input_shape).astype(dtype)
    f = rng.standard_normal(filters_shape).astype(dtype)
    return x, f


def foundation_sweep(batches=(1, 2, 0), empty: bool = True) -> Iterator[Layer]:
    """Every (K, s, d, padding, input width, layout) of the grid with each of its valid
    output widths; the batch cycles through `batches`. With `empty`, then the layers
    where nothing contributes (width 0, kernel 0), whose output is zeros of its shape.

    `foundation_sweep((1, 2), empty=False)` is the same sequence of geometries without
    the layers that have an empty tensor (none of the grid's output widths is 0).
    """
    batch = itertools.cycle(batches)
    for K, s, d, padding, W, layout in itertools.product(
            KERNEL_WIDTHS, STRIDES, DILATIONS, shapes.PADDINGS, WIDTHS, DATA_FORMATS):
        for O in shapes.valid_output_widths(W, K, s, d, padding):
            yield Layer(next(batch), W, IN_CHANNELS, O, OUT_CHANNELS, K, s, d, padding, layout)
    if not empty:
        return
    for layout, (W, O, K, padding) in itertools.product(
            DATA_FORMATS, ((0, 0, 3, "SAME"), (0, 2, 3, "VALID"), (4, 8, 0, "SAME"))):
        yield Layer(1, W, IN_CHANNELS, O, OUT_CHANNELS, K, 2, 1, padding, layout)


def channel_sweep(per_pair: int = 4) -> Iterator[Layer]:
    """Every (in, out) pair of CHANNEL_COUNTS with `per_pair` rotating (K, s, d, padding,
    width, output width, layout, batch) picks each, then ISTFT-like layers (one output
    channel, K a multiple of s, large K, VALID and SAME) at their narrowest and widest
    output."""
    grid = list(itertools.product(KERNEL_WIDTHS, STRIDES, DILATIONS, shapes.PADDINGS,
                                  WIDTHS, DATA_FORMATS))
    # Steps of 37 (prime to the grid's 720 entries) spread the picks over every value.
    picks = (grid[(37 * i) % len(grid)] for i in itertools.count())
    batches = itertools.cycle((1, 2, 0))
    which_width = itertools.cycle((0, -1, 1))  # narrowest, widest, next to narrowest
    for cin, cout in itertools.product(CHANNEL_COUNTS, repeat=2):
        for _ in range(per_pair):
            K, s, d, padding, W, layout = next(picks)
            valid = shapes.valid_output_widths(W, K, s, d, padding)
            O = valid[next(which_width) % len(valid)]
            yield Layer(next(batches), W, cin, O, cout, K, s, d, padding, layout)
    for K, s, cin, padding, layout in (
            (16, 4, 1, "VALID", "NWC"), (32, 8, 5, "VALID", "NCW"), (64, 16, 33, "VALID", "NWC"),
            (64, 16, 33, "VALID", "NCW"), (24, 8, 7, "SAME", "NWC"), (32, 8, 3, "SAME", "NCW"),
            (12, 3, 2, "SAME", "NWC")):
        W = 6
        valid = shapes.valid_output_widths(W, K, s, 1, padding)
        for O in sorted({valid[0], valid[-1]}):
            yield Layer(1, W, cin, O, 1, K, s, 1, padding, layout)


def small_sweep() -> Iterator[Layer]:
    """90 layers, 3 -> 5 channels: every (K, s, d) of the grid once, with a rotating
    choice of SAME/VALID, input width (1, 3, 5), valid output width (narrowest, widest =
    most output_padding, middle), layout and batch 0..2."""
    for index, (K, s, d) in enumerate(itertools.product(KERNEL_WIDTHS, STRIDES, DILATIONS)):
        padding = shapes.PADDINGS[index % 2]
        W = (1, 3, 5)[index % 3]
        valid = shapes.valid_output_widths(W, K, s, d, padding)
        O = valid[(0, -1, len(valid) // 2)[(index // 2) % 3]]
        layout = DATA_FORMATS[(index // 3) % 2]
        yield Layer((index // 5) % 3, W, 3, O, 5, K, s, d, padding, layout)
