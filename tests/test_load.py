"""Load: one op from many threads, and many calls without memory growth."""
import concurrent.futures
import gc

import numpy as np
import psutil
import pytest

import conv1d_transpose as ct

BACKENDS = ["onnxruntime", "tvm"]


def make_op(backend):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((8, 16, 32)).astype(np.float32)
    return ct.Conv1DTranspose(f, [1, 256, 16], 4, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_threads_get_the_serial_results(backend):
    op = make_op(backend)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal(op.input_shape).astype(np.float32) for _ in range(64)]
    serial = [op(x) for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(op, inputs))
    for want, got in zip(serial, parallel):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_session_run_from_four_threads_at_once(backend):
    """`InferenceSession.run` is safe from any thread, as onnxruntime's is. TVM's VM is
    not (tvm_ffi releases the GIL and the VM keeps its registers in the VM object): the
    session serializes calls. Before that this crashed or returned garbage."""
    from conv1d_transpose.runtime import InferenceSession

    op = make_op(backend)
    session = InferenceSession(op.to_onnx(), backend=backend)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal(op.input_shape).astype(np.float32) for _ in range(4)]
    wants = [session.run(None, {name: x})[0] for x in inputs]
    bad = []

    def worker(index):
        for _ in range(500):
            (got,) = session.run(None, {name: inputs[index]})
            if not np.array_equal(got, wants[index]):
                bad.append(index)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    assert not bad


# Stated bound: 10,000 calls may grow resident memory by at most 20 MiB (allocator
# fragmentation and lazily created thread-pool state); a leak of one output per call
# (16 KiB) would be 160 MiB.
GROWTH_BOUND = 20 * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_thousand_calls_do_not_grow_memory(backend):
    op = make_op(backend)
    x = np.random.default_rng(2).standard_normal(op.input_shape).astype(np.float32)
    for _ in range(200):  # warm up: pools, caches, first allocations
        op(x)
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    for _ in range(10_000):
        op(x)
    gc.collect()
    growth = process.memory_info().rss - before
    print(f"{backend}: resident memory grew by {growth / 2**20:.2f} MiB over 10,000 calls")
    assert growth < GROWTH_BOUND
