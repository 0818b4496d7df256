"""Weights outside the library (compile/params.py): the lift of main's large constants,
params.bin and its manifest entry, verification before use, and results through it."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from models import edit_manifest

from conv1d_transpose.compile import params as params_module
from conv1d_transpose.compile.artifact import ArtifactWarning, compile_model
from conv1d_transpose.compile.loader import load_artifact
from conv1d_transpose.compile.manifest import MANIFEST_NAME
from conv1d_transpose.graph import build_model, make_spec, max_error
from conv1d_transpose.graph.errors import BackendError
from conv1d_transpose.runtime.tvm_backend import TVMSession

PARAMS = params_module.PARAMS_NAME


def big_model(data_format="NWC", dtype="float32", seed=1):
    """(spec, filters, model) whose filters (4 x 64 x 128, 128 KiB in float32) are lifted."""
    shape = (2, 24, 64) if data_format == "NWC" else (2, 64, 24)
    spec = make_spec(None, (4, 64, 128), shape, 2, "SAME", data_format=data_format,
                     dtype=dtype)
    filters = np.random.default_rng(seed).standard_normal(spec.filters_shape).astype(dtype)
    return spec, filters, build_model(spec, filters)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An artifact directory with a params.bin, built once for this module."""
    spec, filters, model = big_model()
    out = tmp_path_factory.mktemp("artifact") / "big"
    artifact = compile_model(model, "host", cache_dir=tmp_path_factory.mktemp("cache"),
                             out_dir=out)
    return spec, filters, artifact


def fresh_copy(built, tmp_path):
    spec, filters, artifact = built
    out = tmp_path / "copy"
    shutil.copytree(artifact.path, out)
    return spec, filters, out


def test_tree_digest_is_sha256_of_block_digests():
    data = np.random.default_rng(0).integers(0, 255, (9 << 20) + 3, dtype=np.uint8)
    raw = data.tobytes()
    block = 4 << 20
    expected = hashlib.sha256(b"".join(hashlib.sha256(raw[i:i + block]).digest()
                                       for i in range(0, len(raw), block))).hexdigest()
    assert params_module.tree_digest(memoryview(data)) == expected
    small = b"conv1d"
    assert params_module.tree_digest(memoryview(small)) == \
        hashlib.sha256(hashlib.sha256(small).digest()).hexdigest()


@pytest.mark.parametrize("data_format", ("NWC", "NCW"))
def test_large_weights_live_in_params_file_and_results_match(data_format, tmp_path):
    spec, filters, model = big_model(data_format)
    out = tmp_path / "artifact"
    artifact = compile_model(model, "host", cache_dir=tmp_path / "cache", out_dir=out)
    assert sorted(os.listdir(out)) == ["lib.so", MANIFEST_NAME, PARAMS]
    entry = artifact.manifest["params"]
    assert entry["file"] == PARAMS and entry["digest"] == params_module.DIGEST
    assert len(entry["tensors"]) == 1 and entry["tensors"][0]["offset"] == 0
    assert entry["bytes"] == os.path.getsize(out / PARAMS) >= filters.nbytes
    weights, = artifact.load_params()
    assert weights.ctypes.data % 64 == 0 and list(weights.shape) == entry["tensors"][0]["shape"]
    # The packed filters are the user's numbers, rearranged; the library does not carry them.
    assert np.array_equal(np.sort(weights, axis=None)[-filters.size:],
                          np.sort(filters, axis=None))
    with open(out / "lib.so", "rb") as file:
        library = file.read()
    assert weights.tobytes()[:4096] not in library
    x = np.random.default_rng(2).standard_normal(spec.input_shape).astype("float32")
    got, = TVMSession(str(out), "host").run(None, {"input": x})
    error, ok = max_error(got, x, filters, spec)
    assert ok, error


def test_small_weights_stay_in_the_library(tmp_path):
    from models import small_model
    _, _, model = small_model()
    artifact = compile_model(model, "host", cache_dir=tmp_path / "cache", out_dir=tmp_path / "a")
    assert artifact.manifest["params"] is None and artifact.load_params() == []
    assert not os.path.exists(tmp_path / "a" / PARAMS)


def test_lift_constants_makes_one_parameter_per_large_constant():
    import tvm
    from tvm import relax

    big = np.arange(params_module.MIN_BYTES // 4, dtype="float32")
    small = np.ones(4, "float32")
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(big.shape, "float32"))
    y = relax.Var("y", relax.TensorType(small.shape, "float32"))
    with builder.function("main", [x, y]):
        with builder.dataflow():
            const = relax.const(big)
            a = builder.emit(relax.op.add(x, const))
            b = builder.emit(relax.op.multiply(a, const))  # the same constant again
            c = builder.emit(relax.op.sum(b) + relax.op.sum(relax.op.add(y, relax.const(small))))
            out = builder.emit_output(c)
        builder.emit_func_output(out)
    mod = builder.get()
    lifted, arrays = params_module.lift_constants(mod)
    main = lifted["main"]
    assert [p.name for p in main.params] == ["x", "y", "param0"]
    assert len(arrays) == 1 and np.array_equal(arrays[0], big)
    executable = tvm.compile(lifted, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    xv, yv = np.ones(big.shape, "float32"), np.zeros(4, "float32")
    got = vm["main"](tvm.runtime.tensor(xv), tvm.runtime.tensor(yv),
                     tvm.runtime.tensor(arrays[0])).numpy()
    expected = ((xv + big) * big).sum() + (yv + small).sum()
    assert np.isclose(got, expected, rtol=1e-5)
    unchanged, none = params_module.lift_constants(mod, min_bytes=big.nbytes + 1)
    assert none == [] and unchanged is mod


@pytest.mark.parametrize("damage, message", [
    ("flip", r"params file params.bin has digest .* \(changed or truncated\)"),
    ("truncate", r"params file params.bin has \d+ bytes, the manifest says \d+"),
    ("remove", r"params file 'params.bin' is missing"),
    ("link", r"params file 'params.bin' is a symbolic link"),
])
def test_damaged_params_file_is_refused(built, tmp_path, damage, message):
    _, _, out = fresh_copy(built, tmp_path)
    path = out / PARAMS
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-64])
    elif damage == "remove":
        path.unlink()
    else:
        real = tmp_path / "elsewhere.bin"
        shutil.move(path, real)
        os.symlink(real, path)
    with pytest.raises(BackendError, match=message):
        load_artifact(out)
    with pytest.raises(BackendError, match=message):
        TVMSession(str(out), "host")


@pytest.mark.parametrize("change, message", [
    ({"file": "../params.bin"}, "not a params.bin description"),
    ({"digest": "md5"}, "not a params.bin description"),
    ({"bytes": 12}, "tensors end at byte"),
    ({"tensors": [{"dtype": "float32", "shape": [4], "offset": 3}]}, "is malformed"),
    ({"tensors": [{"dtype": "float32", "shape": ["x"], "offset": 0}]}, "is malformed"),
    ({"tensors": [{"dtype": "no-such", "shape": [4], "offset": 0}]}, "is malformed"),
])
def test_malformed_params_entry_is_refused(built, tmp_path, change, message):
    _, _, out = fresh_copy(built, tmp_path)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    edit_manifest(out, params={**manifest["params"], **change})
    with pytest.raises(BackendError, match=message):
        load_artifact(out)
    edit_manifest(out, params="params.bin")
    with pytest.raises(BackendError, match="not a params.bin description"):
        load_artifact(out)
    manifest.pop("params")
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="manifest has no params entry"):
        load_artifact(out)


def test_damaged_params_in_the_cache_are_rebuilt(tmp_path):
    spec, filters, model = big_model(seed=3)
    cache = tmp_path / "cache"
    first = compile_model(model, "host", cache_dir=cache)
    path = os.path.join(first.path, PARAMS)
    with open(path, "r+b") as file:
        file.seek(100)
        byte = file.read(1)
        file.seek(100)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(ArtifactWarning, match="params file params.bin has digest"):
        again = compile_model(model, "host", cache_dir=cache)
    x = np.random.default_rng(4).standard_normal(spec.input_shape).astype("float32")
    got, = TVMSession(again, "host").run(None, {"input": x})
    assert max_error(got, x, filters, spec)[1]


def test_session_weights_are_the_verified_snapshot(built, tmp_path):
    """A params file rewritten after the session opened changes nothing it computes."""
    spec, filters, out = fresh_copy(built, tmp_path)
    session = TVMSession(str(out), "host")
    with open(out / PARAMS, "r+b") as file:
        file.write(b"\0" * 4096)
    x = np.random.default_rng(5).standard_normal(spec.input_shape).astype("float32")
    got, = session.run(None, {"input": x})
    assert max_error(got, x, filters, spec)[1]
