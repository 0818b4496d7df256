import os
import warnings

import pytest

from conv1d_transpose.runtime import BackendFallbackWarning

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
