"""Random valid calls with 1-8 channels on the TVM backend (host CPU): each builds, runs
on TVM (no fallback) and matches the reference; nothing is raised.

Issue 27 found one in eight such calls crashing the CPU schedule (one input channel).
Each example compiles its own kernel (~0.3 s), so the default run draws 40 examples,
derandomised; the slow run draws 300.
"""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conv1d_transpose as ct
from conv1d_transpose.graph import make_spec, max_error, shapes
from conv1d_transpose.runtime import BackendFallbackWarning


@st.composite
def valid_calls(draw):
    K, s, d = draw(st.integers(1, 8)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    padding, layout = draw(st.sampled_from(["SAME", "VALID"])), draw(st.sampled_from(["NWC", "NCW"]))
    W = draw(st.integers(1, 6))
    widths = list(shapes.valid_output_widths(W, K, s, d, padding))
    O = draw(st.sampled_from(widths))
    N, cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    dtype = draw(st.sampled_from(["float32", "float32", "float16", "float64"]))
    nwc = layout == "NWC"
    return ((N, W, cin) if nwc else (N, cin, W), (K, cout, cin),
            [N, O, cout] if nwc else [N, cout, O], s, padding, layout, d, dtype)


def check(call):
    x_shape, f_shape, y_shape, s, padding, layout, d, dtype = call
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    f = rng.standard_normal(f_shape).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        y = ct.conv1d_transpose(x, f, y_shape, s, padding, layout, d, backend="tvm")
    spec = make_spec(x_shape, f_shape, y_shape, s, padding, layout, d, dtype)
    error, ok = max_error(y, x, f, spec)
    assert ok, (call, error)


COMMON = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
              database=None)


@settings(max_examples=40, **COMMON)
@given(valid_calls())
def test_random_valid_calls_with_few_channels_build_and_match_the_reference(call):
    check(call)


@pytest.mark.slow
@settings(max_examples=300, **COMMON)
@given(valid_calls())
def test_many_random_valid_calls_with_few_channels_on_tvm(call):
    check(call)
