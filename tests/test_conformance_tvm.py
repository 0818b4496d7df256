"""Conformance of the TVM backend (host CPU) on the foundation sweep, through the public API.

Each case is its own compiled artifact (~0.2 s once TVM is warm), so the default run
takes every 5th case of the sweep for float32 (which still covers every K, s, d,
padding, layout and batch) and every 13th for float16/float64; the `slow` run takes all
of them. The channel sweep (channel counts 1, 2, 3, 5, 7 and ISTFT-like layers) runs whole
for float32.
"""
import warnings

import pytest

from test_conformance import CASES, CHANNEL_CASES, run_sweep, through_public_api


def strided(step, offset=0):
    return CASES[offset::step]


def check_tvm(dtype, cases):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to onnxruntime would hide TVM
        mismatches = run_sweep(through_public_api("tvm"), dtype, cases)
    assert mismatches == []


# Every 13th case of the sweep by default for float32, every 26th for float16/float64;
# every case in the slow run.
@pytest.mark.parametrize("dtype, step, offset", [("float32", 13, 1), ("float16", 26, 1),
                                                 ("float64", 26, 14)])
def test_tvm_matches_reference_on_part_of_the_sweep(dtype, step, offset):
    cases = strided(step, offset=offset)
    names = " ".join(layer.name for layer in cases)
    for part in ("-NWC", "-NCW", "SAME", "VALID", "N0-", "N2-", "-d3-", "-s5-", "-K6-"):
        assert part in names, part
    check_tvm(dtype, cases)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_tvm_matches_reference_on_the_whole_sweep(dtype):
    check_tvm(dtype, CASES)


# Every channel count from 1 (issue 27: one input channel crashed the CPU schedule; one
# output channel ran 12-14x slower than onnxruntime), and ISTFT-like layers. float32
# takes every case, float16/float64 every 3rd here and every case in the slow run.
@pytest.mark.parametrize("dtype, step", [("float32", 1), ("float16", 3), ("float64", 3)])
def test_tvm_matches_reference_on_every_channel_count(dtype, step):
    check_tvm(dtype, CHANNEL_CASES[::step])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_tvm_matches_reference_on_the_whole_channel_sweep(dtype):
    check_tvm(dtype, CHANNEL_CASES)
