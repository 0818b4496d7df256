import os
import warnings

import pytest

from conv1d_transpose.runtime import BackendFallbackWarning

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def cache_dir(tmp_path):
    """A fresh private artifact cache for one test."""
    path = tmp_path / "cache"
    path.mkdir(mode=0o700)
    return str(path)


@pytest.fixture
def limit_plans(monkeypatch):
    """`limit_plans(n)` cuts the tuner's plan search to its first n candidate plans (the
    generic one first), for tests of what `tune` does around the search (records, resume,
    errors, devices): test_tuning's test_every_candidate_plan_computes_the_reference covers
    the plans themselves, and the whole search costs ~30 s per tune on 2 cores. This
    process only; the timing processes time the finalists they are given."""
    from conv1d_transpose.compile.kernels import schedule_cpu

    real = schedule_cpu.candidate_plans

    def limit(n: int) -> None:
        monkeypatch.setattr(schedule_cpu, "candidate_plans", lambda g, cpu: real(g, cpu)[:n])
    return limit


@pytest.fixture
def count_builds(monkeypatch):
    """The target names of every TVM build made during the test (cache hits make none)."""
    import conv1d_transpose.compile.build as build_module
    calls = []
    real = build_module.build

    def counting(mod, entry):
        calls.append(entry.name)
        return real(mod, entry)

    monkeypatch.setattr(build_module, "build", counting)
    return calls


@pytest.fixture
def split_kept(monkeypatch):
    """auto's timings at open all say TVM is faster: each TVM segment against the same
    nodes on onnxruntime, and the split against onnxruntime alone. For tests of what goes
    where and of the answer: at test sizes onnxruntime is often faster, and auto would
    (rightly) take it; test_segment_placement and test_placement test the choices."""
    from conv1d_transpose.runtime import split_session

    monkeypatch.setattr(split_session, "median_times", lambda sessions, feeds, **kwargs: {
        name: 1.0 if name in ("tvm", "split") else 2.0 for name in sessions})


def tensorflow_or_skip():
    """TensorFlow (extra `reference`), or a skip that says how to get it."""
    try:
        import tensorflow as tf
    except ImportError:
        pytest.skip("tensorflow not installed (pip install '.[reference]')")
    return tf


@pytest.fixture(autouse=True)
def _quiet_fallback():
    # backend='auto' warns once per op when TVM has no scheduled kernel; tests that care
    # about that warning check it explicitly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackendFallbackWarning)
        yield


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Builds go to a per-session cache, never to the user's.
    cache = tmp_path_factory.getbasetemp() / "artifact-cache"
    cache.mkdir(mode=0o700, exist_ok=True)
    monkeypatch.setenv("CONV1D_TRANSPOSE_CACHE_DIR", str(cache))
    # Nor do they read the user's tuning records: only the shipped ones apply.
    monkeypatch.setenv("CONV1D_TRANSPOSE_TUNING", str(cache.parent / "no-user-tuning.json"))
    # auto measures at every open, as if for the first time: the tests rig its timer
    # differently for the same model, and one test's remembered outcome
    # (runtime/placement_memo.py) must not decide another's. test_placement_memo.py
    # tests the memory with this unset.
    monkeypatch.setenv("CONV1D_TRANSPOSE_REMEASURE", "1")


# Hypothesis profiles for the property campaign (tests/property_campaign.py):
# "ci" is derandomised so CI is reproducible; "long" is the documented big run.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
else:
    _common = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    settings.register_profile("ci", max_examples=2000, derandomize=True, **_common)
    settings.register_profile("long", max_examples=50000, **_common)
    settings.register_profile("dev", max_examples=200, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
