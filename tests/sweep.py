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


# Channel counts of the channel sweep: from one (an ISTFT's one output channel, a mono
# input) through small odd counts that fill no vector of any CPU.
CHANNEL_COUNTS = (1, 2, 3, 5, 7)


def channel_configurations(per_pair=4):
    """The same cases with every (in, out) pair of CHANNEL_COUNTS: `per_pair` rotating
    (K, s, d, padding, width, output width, layout, batch) choices each, then ISTFT-like
    shapes (one output channel, K a multiple of s, large K, VALID and SAME)."""
    grid = list(itertools.product(range(1, 7), range(1, 6), range(1, 4), ("SAME", "VALID"),
                                  (1, 4), ("NWC", "NCW")))
    # Steps of 37 (prime to the grid's 720 entries) spread the picks over every value.
    picks = (grid[(37 * i) % len(grid)] for i in itertools.count())
    batches = itertools.cycle((1, 2, 0))
    widths = itertools.cycle((0, -1, 1))
    for cin, cout in itertools.product(CHANNEL_COUNTS, repeat=2):
        for _ in range(per_pair):
            K, s, d, padding, W, layout = next(picks)
            valid = list(shapes.valid_output_widths(W, K, s, d, padding))
            yield _case(next(batches), W, valid[next(widths) % len(valid)], K, s, d, padding,
                        layout, cin, cout)
    for K, s, cin, padding, layout in (
            (16, 4, 1, "VALID", "NWC"), (32, 8, 5, "VALID", "NCW"), (64, 16, 33, "VALID", "NWC"),
            (64, 16, 33, "VALID", "NCW"), (24, 8, 7, "SAME", "NWC"), (32, 8, 3, "SAME", "NCW"),
            (12, 3, 2, "SAME", "NWC")):
        W = 6
        for O in sorted({min(shapes.valid_output_widths(W, K, s, 1, padding)),
                         max(shapes.valid_output_widths(W, K, s, 1, padding))}):
            yield _case(1, W, O, K, s, 1, padding, layout, cin, 1)


def _case(N, W, O, K, s, d, padding, layout, cin=None, cout=None):
    named = cin is not None
    cin, cout = (cin, cout) if named else (IN_CHANNELS, OUT_CHANNELS)
    if layout == "NWC":
        x, y = (N, W, cin), (N, O, cout)
    else:
        x, y = (N, cin, W), (N, cout, O)
    name = f"N{N}-W{W}-O{O}-K{K}-s{s}-d{d}-{padding}-{layout}"
    if named:
        name += f"-ci{cin}-co{cout}"
    return name, x, (K, cout, cin), y, s, padding, layout, d


def arrays(input_shape, filters_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(input_shape).astype(dtype)
    f = rng.standard_normal(filters_shape).astype(dtype)
    return x, f


def spec_of(case, dtype):
    _, x, f, y, s, padding, layout, d = case
    return make_spec(x, f, y, s, padding, layout, d, dtype)
