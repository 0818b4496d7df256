"""Artifacts and the cache: manifest contents, cache hits, verification before loading,
rebuilds with a warning in our cache, refusal for user-given directories, concurrent
builders, a private cache directory; and TVMSession numerics against the reference."""
import hashlib
import json
import multiprocessing
import os
import stat

import numpy as np
import onnx
import pytest
from models import edit_manifest, small_model

import conv1d_transpose.compile.loader as loader_module
from conv1d_transpose.compile import cache as cache_module
from conv1d_transpose.compile.artifact import ArtifactWarning, compile_model
from conv1d_transpose.compile.cache import (ARTIFACT_FORMAT, ENV_CACHE_DIR, default_cache_dir,
                                            open_cache_dir)
from conv1d_transpose.compile.loader import load_artifact
from conv1d_transpose.compile.manifest import MANIFEST_NAME
from conv1d_transpose.compile.targets import load_targets
from conv1d_transpose.graph import build_model, make_spec, max_error, spec_from_model
from conv1d_transpose.graph.errors import ArgumentError, BackendError
from conv1d_transpose.runtime.tvm_backend import TVMSession


# -- numerics: TVMSession == the numpy reference -------------------------------------------

SPECS = [  # (input width, kernel, stride, dilation, padding, output width)
    (5, 3, 2, 1, "SAME", 10),
    (4, 4, 3, 1, "VALID", 13),
    (6, 3, 1, 2, "SAME", 6),
    (3, 2, 3, 2, "VALID", 10),
]


@pytest.mark.parametrize("dtype", ("float32", "float16", "float64"))
@pytest.mark.parametrize("index", range(len(SPECS)))
def test_session_matches_reference(dtype, index):
    width, kernel, stride, dilation, padding, out_width = SPECS[index]
    rng = np.random.default_rng(index)
    for data_format in ("NWC", "NCW"):
        out = (2, out_width, 3) if data_format == "NWC" else (2, 3, out_width)
        spec = make_spec(None, (kernel, 3, 2), out, stride, padding, data_format=data_format,
                         dilations=dilation, dtype=dtype)
        assert spec.in_width == width
        filters = rng.standard_normal(spec.filters_shape).astype(dtype)
        x = rng.standard_normal(spec.input_shape).astype(dtype)
        for form in ("output_shape", "explicit"):
            session = TVMSession(build_model(spec, filters, form=form), "host")
            got, = session.run(None, {"input": x})
            assert got.dtype == np.dtype(dtype) and got.shape == spec.output_shape
            error, ok = max_error(got, x, filters, spec)
            assert ok, (data_format, form, error)


def test_session_surface():
    spec, filters, model = small_model()
    session = TVMSession(model, "host")
    assert session.backend == "tvm:host"
    assert isinstance(session.scheduled, bool) and session.scheduled == session.artifact.scheduled
    (arg,) = session.get_inputs()
    assert (arg.name, arg.shape, arg.type) == ("input", list(spec.input_shape), "tensor(float)")
    (out,) = session.get_outputs()
    assert (out.name, out.shape, out.type) == ("output", list(spec.output_shape), "tensor(float)")
    x = np.random.default_rng(1).standard_normal(spec.input_shape).astype(np.float32)
    by_name, = session.run(["output"], {"input": x})
    unaligned = np.zeros(x.size + 1, np.float32)[1:].reshape(x.shape)  # not 64-byte aligned
    unaligned[...] = x
    np.testing.assert_array_equal(session.run(None, {"input": unaligned})[0], by_name)
    np.testing.assert_array_equal(session.run(None, {"input": np.asfortranarray(x)})[0], by_name)
    with pytest.raises(ArgumentError, match="dtype float64"):
        session.run(None, {"input": x.astype(np.float64)})
    with pytest.raises(ArgumentError, match="shape"):
        session.run(None, {"input": x[:, :-1]})
    with pytest.raises(ArgumentError, match="inputs are"):
        session.run(None, {"x": x})
    with pytest.raises(ArgumentError, match="'nope'"):
        session.run(["nope"], {"input": x})


def test_session_from_onnx_file(tmp_path):
    spec, filters, model = small_model()
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    session = TVMSession(str(path))
    x = np.ones(spec.input_shape, np.float32)
    assert max_error(session.run(None, {"input": x})[0], x, filters, spec)[1]


def test_filters_as_a_graph_input(cache_dir):
    spec = make_spec(None, (3, 4, 2), (1, 9, 4), 2, "SAME")
    session = TVMSession(build_model(spec, None), cache_dir=cache_dir)
    assert [i.name for i in session.get_inputs()] == ["input", "filters"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    f = rng.standard_normal(spec.filters_shape).astype(np.float32)
    assert max_error(session.run(None, {"input": x, "filters": f})[0], x, f, spec)[1]


# -- manifest -------------------------------------------------------------------------------

def test_manifest_contents(cache_dir):
    spec, _, model = small_model()
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    manifest = json.loads(open(os.path.join(artifact.path, MANIFEST_NAME)).read())
    assert manifest == artifact.manifest
    assert manifest["format"] == ARTIFACT_FORMAT
    assert manifest["spec"] == json.loads(spec_from_model(model).to_json())
    assert artifact.spec == spec
    assert manifest["inputs"] == [{"name": "input", "shape": list(spec.input_shape),
                                   "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "output", "shape": list(spec.output_shape),
                                    "dtype": "float32"}]
    assert manifest["target_name"] == "host"
    assert manifest["target"] == load_targets()["host"].target_dict()
    assert manifest["target"]["mcpu"] != "native" and "mcpu" in manifest["target_str"]
    assert manifest["family"] == "cpu" and manifest["device_code"] is None
    import tvm
    import tvm_ffi
    assert manifest["tvm_version"] == tvm.__version__
    assert manifest["tvm_ffi_version"] == tvm_ffi.__version__
    assert manifest["model_sha256"] == hashlib.sha256(
        model.SerializeToString(deterministic=True)).hexdigest()
    with open(artifact.library_path, "rb") as file:
        library = file.read()
    assert library[:4] == b"\x7fELF"
    assert manifest["library"] == "lib.so"
    assert manifest["library_sha256"] == hashlib.sha256(library).hexdigest()
    assert isinstance(manifest["scheduled"], bool)
    assert manifest["cache_key"] == os.path.basename(artifact.path)
    assert manifest["model_opset"] == 17
    assert manifest["options"]["relax_pipeline"] == "default"
    for key in ("built_at", "build_seconds", "package_version", "compiler_version"):
        assert manifest[key]


def test_model_without_spec_metadata(cache_dir):
    _, _, model = small_model()
    del model.metadata_props[:]
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    assert artifact.manifest["spec"] is None and artifact.spec is None


# -- cache ------------------------------------------------------------------------------------

def test_cache_hit_skips_compilation(cache_dir, count_builds):
    _, _, model = small_model()
    first = compile_model(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host"]
    second = compile_model(model, "host", cache_dir=cache_dir)
    session = TVMSession(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host"]
    assert second.path == first.path == session.artifact.path
    other = compile_model(small_model(out_width=10)[2], "host", cache_dir=cache_dir)
    assert other.path != first.path and count_builds == ["host", "host"]


def test_cache_key_covers_target_and_versions(cache_dir, monkeypatch):
    _, _, model = small_model()
    host = compile_model(model, "host", cache_dir=cache_dir)
    avx2 = compile_model(model, "x86-avx2", cache_dir=cache_dir)
    assert host.path != avx2.path and avx2.target["mcpu"] == "haswell"
    versions = dict(cache_module.versions())
    monkeypatch.setattr(cache_module, "versions", lambda: {**versions, "compiler": "other"})
    key = cache_module.cache_key(host.manifest["model_sha256"], host.target, {})
    assert key != host.manifest["cache_key"]


def flip_byte(path, offset=None):
    with open(path, "r+b") as file:
        data = bytearray(file.read())
        offset = len(data) // 2 if offset is None else offset
        data[offset] ^= 0xFF
        file.seek(0)
        file.write(data)


def truncate(path):
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 3)


@pytest.mark.parametrize("damage", (flip_byte, truncate))
def test_damaged_cached_library_is_rebuilt_with_a_warning(cache_dir, count_builds, damage):
    spec, filters, model = small_model()
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    damage(artifact.library_path)
    with pytest.warns(ArtifactWarning, match=r"rebuilding cached artifact .*sha256"):
        again = compile_model(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host", "host"] and again.path == artifact.path
    assert load_artifact(again.path).manifest["library_sha256"] == hashlib.sha256(
        open(again.library_path, "rb").read()).hexdigest()
    x = np.ones(spec.input_shape, np.float32)
    got, = TVMSession(model, "host", cache_dir=cache_dir).run(None, {"input": x})
    assert max_error(got, x, filters, spec)[1]


@pytest.mark.parametrize("damage", (flip_byte, truncate))
def test_damaged_user_artifact_is_refused_before_loading(cache_dir, tmp_path, monkeypatch,
                                                         damage):
    _, _, model = small_model()
    out = tmp_path / "artifact"
    compile_model(model, "host", cache_dir=cache_dir, out_dir=out)
    damage(out / "lib.so")
    import tvm

    def must_not_load(*args, **kwargs):
        raise AssertionError("a library that failed verification was loaded")

    monkeypatch.setattr(tvm.runtime, "load_module", must_not_load)
    monkeypatch.setattr(loader_module, "_load_module", must_not_load)
    with pytest.raises(BackendError, match=r"artifact .*lib.so has sha256.*changed or truncated"):
        load_artifact(out)
    with pytest.raises(BackendError, match="sha256"):
        TVMSession(str(out), "host")


def test_foreign_tvm_version_is_rebuilt_in_cache_and_refused_from_user(cache_dir, tmp_path,
                                                                       count_builds):
    _, _, model = small_model()
    artifact = compile_model(model, "host", cache_dir=cache_dir)
    edit_manifest(artifact.path, tvm_version="0.19.0")
    with pytest.warns(ArtifactWarning, match=r"built by TVM '0.19.0'"):
        again = compile_model(model, "host", cache_dir=cache_dir)
    assert count_builds == ["host", "host"]
    assert again.manifest["tvm_version"] != "0.19.0"

    out = tmp_path / "artifact"
    compile_model(model, "host", cache_dir=cache_dir, out_dir=out)
    edit_manifest(out, tvm_version="0.19.0")
    with pytest.raises(BackendError, match=r"built by TVM '0.19.0'"):
        load_artifact(out)


def test_user_artifact_for_another_target_is_refused(cache_dir, tmp_path):
    spec, filters, model = small_model()
    out = tmp_path / "artifact"
    artifact = compile_model(model, "x86-avx2", cache_dir=cache_dir, out_dir=out)
    assert artifact.path == str(out) and sorted(os.listdir(out)) == ["lib.so", MANIFEST_NAME]
    with pytest.raises(BackendError, match=r"target .*haswell.*asked for target 'host'"):
        TVMSession(str(out), "host")
    if load_targets()["x86-avx2"].capabilities().can_run:
        session = TVMSession(str(out), "x86-avx2")
        x = np.ones(spec.input_shape, np.float32)
        assert max_error(session.run(None, {"input": x})[0], x, filters, spec)[1]


def test_user_artifact_problems(tmp_path):
    with pytest.raises(BackendError, match="not a directory"):
        load_artifact(tmp_path / "missing")
    with pytest.raises(BackendError, match="no manifest.json"):
        load_artifact(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BackendError, match="unreadable"):
        load_artifact(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(BackendError, match="format"):
        load_artifact(tmp_path)


def test_out_dir_refuses_to_replace_a_non_artifact(cache_dir, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ArgumentError, match="not an artifact"):
        compile_model(small_model()[2], "host", cache_dir=cache_dir, out_dir=tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def _build_in_child(model_bytes, cache_dir, barrier, results):
    import conv1d_transpose.compile.build as child_build
    from conv1d_transpose.compile.artifact import compile_model as child_compile

    built = []
    real = child_build.build
    child_build.build = lambda mod, entry: built.append(1) or real(mod, entry)
    model = onnx.load_from_string(model_bytes)
    barrier.wait(timeout=60)
    artifact = child_compile(model, "host", cache_dir=cache_dir)
    results.put((artifact.path, len(built)))


def test_concurrent_builders_make_one_artifact(cache_dir):
    _, _, model = small_model(out_width=10, seed=7)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    children = [context.Process(target=_build_in_child,
                                args=(model.SerializeToString(), cache_dir, barrier, results))
                for _ in range(2)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    paths = {path for path, _ in outcomes}
    assert len(paths) == 1
    assert sorted(built for _, built in outcomes) == [0, 1]  # the second waited, then hit
    entries = [name for name in os.listdir(cache_dir) if not name.endswith(".lock")]
    assert entries == [os.path.basename(paths.pop())]  # no temporary directories left
    load_artifact(os.path.join(cache_dir, entries[0]))


# -- the cache directory ------------------------------------------------------------------

@pytest.mark.parametrize("mode", (0o770, 0o707, 0o777))
def test_cache_dir_writable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "shared-cache"
    path.mkdir()
    os.chmod(path, mode)
    with pytest.raises(ArgumentError, match=r"writable by group or others.*chmod 700"):
        compile_model(small_model()[2], "host", cache_dir=path)
    with pytest.raises(ValueError):
        TVMSession(small_model()[2], "host", cache_dir=path)


def test_cache_dir_is_created_private(tmp_path):
    path = tmp_path / "new" / "cache"
    assert open_cache_dir(path) == str(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "explicit"))
    assert default_cache_dir() == str(tmp_path / "explicit")
    monkeypatch.delenv(ENV_CACHE_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "conv1d-transpose")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == str(tmp_path / "home" / ".cache" / "conv1d-transpose")


def test_several_outputs_by_name(cache_dir):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 3, 3), np.float32), "W")
    nodes = [helper.make_node("ConvTranspose", ["X", "W"], ["Y"], strides=[2],
                              output_shape=[8], auto_pad="SAME_UPPER"),
             helper.make_node("Relu", ["Y"], ["Z"])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 8]) for name in "YZ"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, [1, 2, 4])], outputs, initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = TVMSession(model, cache_dir=cache_dir)
    x = np.random.default_rng(3).standard_normal((1, 2, 4)).astype(np.float32)
    y, z = session.run(None, {"X": x})
    np.testing.assert_array_equal(np.maximum(y, 0), z)
    only_z, = session.run(["Z"], {"X": x})
    np.testing.assert_array_equal(only_z, z)


def test_compiler_version_names_the_kernel_version_without_importing_lowering():
    """compiler_version reads the declared version from the sources (no import of the
    lowering on a cache hit); it must be the one the lowering declares."""
    from conv1d_transpose.compile import lowering

    declared = getattr(lowering, "VERSION", None) or lowering.KERNEL_VERSION
    assert cache_module.compiler_version().split("+")[0] == declared
    assert cache_module._declared(b'x = 1\nKERNEL_VERSION = "k-3"\n', "KERNEL_VERSION") == "k-3"
    assert cache_module._declared(b'    KERNEL_VERSION = "nested"\n', "KERNEL_VERSION") is None
