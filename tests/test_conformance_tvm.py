"""Conformance of the TVM backend (host CPU) on the foundation sweep, through the public API.

Each case is its own compiled artifact (~0.2 s once TVM is warm), so the default run
takes every 5th case of the sweep for float32 (which still covers every K, s, d,
padding, layout and batch) and every 13th for float16/float64; the `slow` run takes all
of them.
"""
import warnings

import pytest

from test_conformance import CASES, run_sweep, through_public_api


def strided(step, offset=0):
    return CASES[offset::step]


def check_tvm(dtype, cases):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to onnxruntime would hide TVM
        mismatches = run_sweep(through_public_api("tvm"), dtype, cases)
    assert mismatches == []


@pytest.mark.parametrize("dtype, step", [("float32", 5), ("float16", 13), ("float64", 13)])
def test_tvm_matches_reference_on_part_of_the_sweep(dtype, step):
    cases = strided(step, offset=1)
    names = " ".join(case[0] for case in cases)
    for part in ("-NWC", "-NCW", "SAME", "VALID", "N0-", "N2-", "-d3-", "-s5-", "-K6-"):
        assert part in names, part
    check_tvm(dtype, cases)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_tvm_matches_reference_on_the_whole_sweep(dtype):
    check_tvm(dtype, CASES)
