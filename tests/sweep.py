"""The foundation sweep: small configurations covering every case of the contract.

K 1..6, s 1..5, d 1..3, SAME and VALID, every valid output width for a few input
widths, both layouts, batch cycling 0..2, plus empty widths and empty kernels.
"""
from __future__ import annotations

import itertools

import numpy as np

from conv1d_transpose.graph import make_spec, shapes

IN_CHANNELS, OUT_CHANNELS = 2, 3


def configurations(widths=(1, 4), kernels=range(1, 7), strides=range(1, 6),
                   dilations=range(1, 4), layouts=("NWC", "NCW")):
    """Yield (name, input_shape, filters_shape, output_shape, stride, padding, layout, dilation)."""
    batches = itertools.cycle((1, 2, 0))
    for K, s, d, padding, W, layout in itertools.product(
            kernels, strides, dilations, ("SAME", "VALID"), widths, layouts):
        for O in shapes.valid_output_widths(W, K, s, d, padding):
            yield _case(next(batches), W, O, K, s, d, padding, layout)
    # Degenerate shapes: nothing contributes, the output is zeros of output_shape.
    for layout, (W, O, K, padding) in itertools.product(
            layouts, ((0, 0, 3, "SAME"), (0, 2, 3, "VALID"), (4, 8, 0, "SAME"))):
        yield _case(1, W, O, K, 2, 1, padding, layout)


def _case(N, W, O, K, s, d, padding, layout):
    if layout == "NWC":
        x, y = (N, W, IN_CHANNELS), (N, O, OUT_CHANNELS)
    else:
        x, y = (N, IN_CHANNELS, W), (N, OUT_CHANNELS, O)
    name = f"N{N}-W{W}-O{O}-K{K}-s{s}-d{d}-{padding}-{layout}"
    return name, x, (K, OUT_CHANNELS, IN_CHANNELS), y, s, padding, layout, d


def arrays(input_shape, filters_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(input_shape).astype(dtype)
    f = rng.standard_normal(filters_shape).astype(dtype)
    return x, f


def spec_of(case, dtype):
    _, x, f, y, s, padding, layout, d = case
    return make_spec(x, f, y, s, padding, layout, d, dtype)
