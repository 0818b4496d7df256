"""What a cache hit and a call do (behaviour only: no timings here).

A cache hit of a `Conv1DTranspose` finds its artifact by the op's recipe without
exporting the model, and reads and hashes the library once; a call hands out arrays that
no later call overwrites.
"""
import os
import warnings

import numpy as np
import pytest

import conv1d_transpose as ct
import conv1d_transpose.compile.loader as loader_module
import conv1d_transpose.graph.onnx_export as onnx_export
from conv1d_transpose.compile import cache as cache_module
from conv1d_transpose.compile import model_source as model_source_module
from conv1d_transpose.compile.artifact import ArtifactWarning

reference_conv1d_transpose = ct.reference_conv1d_transpose

FILTERS = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)


def make_op(cache_dir, filters=FILTERS, backend="tvm", **options):
    return ct.Conv1DTranspose(filters, [1, 20, 8], 2, backend=backend, cache_dir=cache_dir,
                              **options)


@pytest.fixture
def counts(monkeypatch):
    """How often the model is exported, and the library read or hashed."""
    seen = {"export": 0, "read": 0, "sha256_file": 0}

    def counting(module, name, key):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            seen[key] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    import conv1d_transpose.op as op_module
    counting(op_module, "build_model", "export")
    counting(loader_module, "sha256_file", "sha256_file")
    real_read = loader_module.VerifiedLibrary.read.__func__

    def read(cls, path):
        seen["read"] += 1
        return real_read(cls, path)
    monkeypatch.setattr(loader_module.VerifiedLibrary, "read", classmethod(read))
    return seen


def aliases(cache_dir):
    directory = os.path.join(cache_dir, "aliases")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def check(op):
    x = np.random.default_rng(1).standard_normal(op.input_shape).astype(np.float32)
    np.testing.assert_allclose(op(x), reference_conv1d_transpose(x, FILTERS, op.spec),
                               rtol=1e-4, atol=1e-4)


def test_a_cache_hit_exports_nothing_and_reads_the_library_once(cache_dir, counts):
    first = make_op(cache_dir)
    assert counts["export"] == 1 and len(aliases(cache_dir)) == 1
    counts.update(export=0, read=0, sha256_file=0)
    op = make_op(cache_dir)
    assert op.backend == "tvm:host"
    assert counts == {"export": 0, "read": 1, "sha256_file": 0}
    assert op._session.artifact.path == first._session.artifact.path
    check(op)
    # The onnxruntime backend needs the model: it is made then.
    make_op(cache_dir, backend="onnxruntime")
    assert counts["export"] == 1


def test_the_recipe_covers_filters_dtype_name_and_exporter(cache_dir, monkeypatch):
    op = make_op(cache_dir)
    recipe = op._recipe()
    other = FILTERS.copy()
    other[0, 0, 0] += 1
    assert make_op(cache_dir, other)._recipe() != recipe
    swapped = FILTERS.astype(FILTERS.dtype.newbyteorder())  # same values, other bytes
    assert make_op(cache_dir, swapped)._recipe() != recipe
    assert make_op(cache_dir, name="up")._recipe() != recipe
    import conv1d_transpose.op as op_module
    monkeypatch.setattr(op_module, "exporter_version", lambda: "another exporter")
    assert op._recipe() != recipe


def test_a_garbled_or_stale_alias_is_corrected(cache_dir, count_builds):
    op = make_op(cache_dir)
    recipe, = aliases(cache_dir)
    path = os.path.join(cache_dir, "aliases", recipe)
    good = open(path).read()
    for text in ("garbage", "0" * 64):  # unreadable; a model with no artifact
        with open(path, "w") as file:
            file.write(text)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ArtifactWarning)
            again = make_op(cache_dir)
        assert again._session.artifact.path == op._session.artifact.path
        assert open(path).read() == good
    assert count_builds == ["host"]


def test_an_alias_to_another_shape_is_refused_by_the_spec(cache_dir, count_builds):
    """An alias naming the model of another spec (a planted or corrupted record) finds an
    artifact whose manifest spec differs: the op's own artifact is used instead, never
    the other one, and the record is corrected."""
    first = make_op(cache_dir)
    other = ct.Conv1DTranspose(FILTERS, [1, 22, 8], 2, backend="tvm", cache_dir=cache_dir)
    recipe = first._recipe()
    path = os.path.join(cache_dir, "aliases", recipe)
    good = open(path).read()
    with open(path, "w") as file:
        file.write(other._session.artifact.manifest["model_sha256"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArtifactWarning)
        op = make_op(cache_dir)
    assert op._session.artifact.path == first._session.artifact.path
    assert open(path).read() == good
    check(op)
    assert count_builds == ["host", "host"]


def test_a_damaged_artifact_found_by_alias_is_rebuilt_with_a_warning(cache_dir,
                                                                      count_builds):
    first = make_op(cache_dir)
    library = first._session.artifact.library_path
    with open(library, "r+b") as file:
        file.truncate(1000)
    with pytest.warns(ArtifactWarning, match="changed or truncated"):
        op = make_op(cache_dir)
    check(op)
    assert count_builds == ["host", "host"]


def test_an_unwritable_alias_directory_still_serves_the_op(cache_dir, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache_module.tempfile, "mkstemp", denied)
    check(make_op(cache_dir))
    assert aliases(cache_dir) == []


def test_outputs_are_not_aliased_between_calls(cache_dir):
    op = make_op(cache_dir)
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal(op.input_shape).astype(np.float32) for _ in range(4)]
    outputs = [op(x) for x in inputs]
    for x, y in zip(inputs, outputs):  # an earlier result is not overwritten by later calls
        np.testing.assert_allclose(y, reference_conv1d_transpose(x, FILTERS, op.spec),
                                   rtol=1e-4, atol=1e-4)
    assert len({y.ctypes.data for y in outputs}) == len(outputs)


def test_unaligned_and_non_contiguous_inputs(cache_dir):
    op = make_op(cache_dir)
    x = np.random.default_rng(3).standard_normal(op.input_shape).astype(np.float32)
    buffer = np.zeros(x.size + 1, np.float32)
    unaligned = buffer[1:].reshape(x.shape)  # 4 bytes past an aligned start
    unaligned[...] = x
    assert unaligned.ctypes.data % 64 != 0
    strided = np.ascontiguousarray(np.repeat(x, 2, axis=1))[:, ::2]
    want = op(x)
    np.testing.assert_array_equal(op(unaligned), want)
    np.testing.assert_array_equal(op(strided), want)
    np.testing.assert_array_equal(op(x.tolist()), want)


def test_the_onnx_export_is_unchanged_by_the_recipe(cache_dir):
    """to_onnx() still exports the model the recipe stands for."""
    op = make_op(cache_dir)
    model = op.to_onnx()
    assert model_source_module.model_sha256(model) == \
        op._session.artifact.manifest["model_sha256"]
    assert onnx_export.spec_from_model(model) == op.spec


def aligned(array, shift=0):
    """A copy of `array` whose data starts `shift` bytes past a 64-byte boundary."""
    raw = np.zeros(array.nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + shift
    copy = np.ndarray(array.shape, array.dtype, raw, start)
    copy[...] = array
    assert copy.ctypes.data % 64 == shift
    return copy


@pytest.mark.parametrize("width", (10, 4000))  # the small-input buffer, and the direct path
def test_inputs_of_every_alignment_and_read_only(cache_dir, width):
    filters = np.random.default_rng(4).standard_normal((4, 8, 8)).astype(np.float32)
    op = ct.Conv1DTranspose(filters, [1, 2 * width, 8], 2, backend="tvm", cache_dir=cache_dir)
    x = np.random.default_rng(5).standard_normal(op.input_shape).astype(np.float32)
    want = reference_conv1d_transpose(x, filters, op.spec)
    for shift in (0, 4, 16, 32):
        for writeable in (True, False):
            array = aligned(x, shift)
            array.setflags(write=writeable)
            for got in (op(array), op._session.run(None, {"input": array})[0]):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(op(x[:, ::-1][:, ::-1]), want, rtol=1e-4, atol=1e-4)


def test_each_thread_has_its_own_input_buffer(cache_dir):
    """The small-input buffer is per thread: sessions called from two threads at once
    (each thread its own call) never see each other's input."""
    op = make_op(cache_dir)
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal(op.input_shape).astype(np.float32) for _ in range(2)]
    wants = [reference_conv1d_transpose(x, FILTERS, op.spec) for x in inputs]
    assert_two_threads_get_their_own(op._session, inputs, wants, calls=300)


def assert_two_threads_get_their_own(session, inputs, wants, calls):
    """Two threads call `session._run_one` at once, `calls` times each, thread i with
    inputs[i]: every result must be wants[i]."""
    import threading

    errors = []

    def worker(index):
        try:
            for _ in range(calls):
                np.testing.assert_allclose(session._run_one(inputs[index]), wants[index],
                                           rtol=1e-4, atol=1e-4)
        except AssertionError as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_artifact_problem_checks_without_a_snapshot(cache_dir, counts):
    """artifact_problem (what an RPC session checks before uploading) hashes the file and
    keeps no copy; load_artifact keeps the snapshot it hashed."""
    artifact = make_op(cache_dir)._session.artifact
    counts.update(read=0, sha256_file=0)
    assert loader_module.artifact_problem(artifact.path) is None
    assert counts["read"] == 0 and counts["sha256_file"] == 1
    loaded = loader_module.load_artifact(artifact.path)
    assert counts["read"] == 1 and loaded.library.sha256 == artifact.manifest["library_sha256"]
    assert loaded.verified_library_bytes() == open(artifact.library_path, "rb").read()


THREADS_SCRIPT = """
import glob, os, numpy as np
import conv1d_transpose as ct
op = ct.Conv1DTranspose(np.ones((4, 8, 8), np.float32), [1, 4096, 8], 2, backend="tvm",
                        threads=2)
op(np.ones((1, 2048, 8), np.float32))  # a call large enough to start TVM's workers
full = os.sched_getaffinity(0)
pinned = 0
for task in glob.glob("/proc/self/task/*"):
    allowed = os.sched_getaffinity(int(task.rsplit("/", 1)[1]))
    pinned += allowed != full
print("pinned", pinned)
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux thread affinities and at least 2 CPUs")
@pytest.mark.parametrize("bind, pinned", [(None, False), ("1", True)])
def test_tvm_workers_are_left_unpinned_unless_the_user_asks(tmp_path, bind, pinned):
    """TVM pins its workers by default; the OS then sometimes runs the caller on a
    worker's core and every call takes twice as long (runtime/tvm_backend.py)."""
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "TVM_BIND_THREADS"}
    if bind is not None:
        env["TVM_BIND_THREADS"] = bind
    result = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    count = int(result.stdout.split("pinned")[-1])
    assert (count > 0) == pinned, result.stdout


@pytest.mark.parametrize("pinned_bytes", [4 << 20, 0], ids=["pinned", "pageable"])
def test_gpu_call_path_with_the_cpu_standing_in(cache_dir, monkeypatch, pinned_bytes):
    """The GPU's call path (_GpuStaging), run here with the CPU standing in for the GPU
    and for CUDA's pinned host memory: the reference result from both of its forms (a
    small call staged through the reused host buffers, and one above the cap straight
    from numpy), each call a fresh array that a later call leaves alone, from two threads
    at once."""
    import tvm

    from conv1d_transpose.runtime import tvm_backend

    monkeypatch.setattr(tvm_backend, "_PINNED_BYTES", pinned_bytes)
    op = make_op(cache_dir)
    session = op._session
    session._on_cpu, session._host_device = False, tvm.cpu(0)
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal(op.input_shape).astype(np.float32) for _ in range(4)]
    wants = [reference_conv1d_transpose(x, FILTERS, op.spec) for x in inputs]
    got = [session._run_one(x) for x in inputs]
    for y, want in zip(got, wants):  # read after all four calls: none overwritten
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    assert session._local.gpu_staging.pinned == bool(pinned_bytes)
    assert_two_threads_get_their_own(session, inputs[:2], wants[:2], calls=100)
