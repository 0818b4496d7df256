"""graph/sweeps.py: the layers the conformance, kernel and device tests and `portability`
run are valid calls, and the sweeps keep their size (a smaller sweep tests less)."""
import collections
import dataclasses
import itertools

import numpy as np
import pytest

from conv1d_transpose.graph import shapes, sweeps

SIZES = {sweeps.foundation_sweep: 2166, sweeps.channel_sweep: 114, sweeps.small_sweep: 90}


@pytest.mark.parametrize("sweep", SIZES, ids=lambda sweep: sweep.__name__)
def test_every_layer_is_a_valid_call_and_the_sweep_keeps_its_size(sweep):
    layers = list(sweep())
    assert len(layers) == SIZES[sweep]
    for layer in layers:
        spec = layer.spec("float16")  # raises where TF would refuse the call
        assert dataclasses.astuple(spec)[:10] == dataclasses.astuple(layer)
        assert (spec.input_shape, spec.filters_shape, spec.output_shape) == \
            (layer.input_shape, layer.filters_shape, layer.output_shape)


def test_foundation_sweep_takes_every_valid_output_width_of_the_grid():
    layers = list(sweeps.foundation_sweep(empty=False))
    found = collections.Counter((layer.kernel_width, layer.stride, layer.dilation,
                                 layer.padding, layer.in_width, layer.data_format)
                                for layer in layers)
    grid = itertools.product(sweeps.KERNEL_WIDTHS, sweeps.STRIDES, sweeps.DILATIONS,
                             shapes.PADDINGS, sweeps.WIDTHS, ("NWC", "NCW"))
    assert found == {(K, s, d, padding, W, layout): len(
        shapes.valid_output_widths(W, K, s, d, padding)) for K, s, d, padding, W, layout in grid}
    assert {layer.batch for layer in layers} == {0, 1, 2}
    # Other batches change nothing else (portability runs batches 1 and 2 only).
    portability = sweeps.foundation_sweep(batches=(1, 2), empty=False)
    assert [dataclasses.replace(layer, batch=0) for layer in layers] == \
        [dataclasses.replace(layer, batch=0) for layer in portability]
    empty = list(sweeps.foundation_sweep())[len(layers):]
    assert len(empty) == 6 and all(0 in (layer.in_width, layer.kernel_width) for layer in empty)


def test_small_sweep_takes_each_kernel_stride_and_dilation_once():
    found = sorted((layer.kernel_width, layer.stride, layer.dilation)
                   for layer in sweeps.small_sweep())
    assert found == list(itertools.product(sweeps.KERNEL_WIDTHS, sweeps.STRIDES,
                                           sweeps.DILATIONS))


def test_random_arrays_depend_only_on_the_seed():
    layer = list(sweeps.small_sweep())[7]
    x, f = layer.arrays("float16", seed=3)
    again = sweeps.random_arrays(layer.input_shape, layer.filters_shape, "float16", 3)
    assert x.shape == layer.input_shape and f.shape == layer.filters_shape
    assert x.dtype == np.float16 and all(np.array_equal(a, b) for a, b in zip((x, f), again))
    assert not np.array_equal(layer.arrays("float16", seed=4)[1], f)
