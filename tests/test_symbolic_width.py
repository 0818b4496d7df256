"""One kernel for every input width (issue 30, compile/kernels/symbolic_width.py), and
the sessions that run a dynamic-width model from one TVM build
(runtime/symbolic_session.py)."""
from __future__ import annotations

import dataclasses
import types
import warnings

import numpy as np
import pytest
import tvm

import conv1d_transpose as ct
from conv1d_transpose.compile.kernels import (Geometry, fold_filters, kernel_geometry,
                                              pack_filters, schedule_cpu)
from conv1d_transpose.compile.kernels import symbolic_width, width_variants
from conv1d_transpose.graph import TOLERANCES
from conv1d_transpose.graph.reference import magnitude, reference_conv1d_transpose


def host_target():
    from tvm.target import codegen

    return tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(),
                              "num-cores": 2})


def _layer(cin, cout, K, s, d, pb, pe, fmt, batch=1):
    """The layer at the reference width, and its output width offset c (O = s*W + c)."""
    offset = (K - 1) * d + 1 - s - pb - pe
    width = symbolic_width.REFERENCE_WIDTH
    return Geometry(batch, width, cin, s * width + offset, cout, K, s, d, pb, fmt,
                    "float32"), offset


def _check(y, x, f, layer):
    """y against the float64 reference, within float32's tolerance (graph/reference.py):
    the layer's explicit pads, not TF's padding names, so its fields stand in for a spec."""
    spec = types.SimpleNamespace(batch=layer.batch, in_width=layer.in_width,
                                 out_width=layer.out_width, out_channels=layer.out_channels,
                                 kernel_width=layer.kernel_width, stride=layer.stride,
                                 dilation=layer.dilation, pad_begin=layer.pad_begin,
                                 data_format=layer.data_format)
    exact = reference_conv1d_transpose(x, f, spec)
    rtol, atol = TOLERANCES["float32"]
    bound = rtol * magnitude(x, f, spec) + atol
    error = np.abs(y.astype(np.float64) - exact)
    assert (error <= bound).all(), f"W={layer.in_width}: max error {error.max()}"


def _build(geometry, offset, cpu_plan=None):
    target = host_target()
    width = symbolic_width.fit(symbolic_width.layer_at(geometry, offset))
    assert width is not None
    if cpu_plan is None:  # as the lowering builds it, with its nests (width_variants.py)
        func, layout, _ = width_variants.build(geometry, target, width)
    else:
        func, layout = schedule_cpu.build(kernel_geometry(geometry), target, cpu_plan,
                                          width=width)
    library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=target)
    return library["main"], layout, width


# (cin, cout, K, s, d, pb, pe, layout): HiFi-GAN's and EnCodec's upsamplers' forms, an
# inactive phase (K < s), a dilation, a folded layer (one and four output channels),
# stride 1 ('same' and 'valid'), output padding (pe < 0 widens), several channel blocks.
LAYERS = [
    (64, 32, 16, 8, 1, 4, 4, "NCW"),
    (48, 40, 16, 8, 1, 4, 4, "NWC"),
    (24, 46, 3, 4, 2, 0, 0, "NWC"),
    (32, 1, 16, 8, 1, 4, 4, "NCW"),
    (16, 4, 10, 5, 1, 3, 2, "NWC"),
    (40, 40, 3, 1, 5, 5, 5, "NCW"),
    (20, 24, 7, 1, 1, 0, 0, "NWC"),
    (40, 30, 3, 2, 1, 0, -1, "NCW"),
    (96, 70, 4, 2, 1, 1, 1, "NWC"),
]


@pytest.mark.parametrize("layer", LAYERS, ids=str)
def test_one_kernel_computes_the_reference_at_every_width(layer):
    geometry, offset = _layer(*layer)
    kernel, layout, width = _build(geometry, offset)
    rng = np.random.default_rng(0)
    f = rng.standard_normal((geometry.kernel_width, geometry.out_channels,
                             geometry.in_channels)).astype(np.float32)
    packed = tvm.runtime.tensor(pack_filters(
        np.ascontiguousarray(fold_filters(f, kernel_geometry(geometry))), layout))
    for w in range(1, 400):
        at = symbolic_width.layer_at(geometry, offset)(w)
        if w > 20 and w not in (63, 64, 65, 127, 129, 256, 257, 399):
            continue
        if at.out_width < 1:
            continue
        x = rng.standard_normal(at.input_shape).astype(np.float32)
        out = tvm.runtime.empty(at.output_shape, "float32", tvm.cpu())
        kernel(tvm.runtime.tensor(x), packed, out)
        _check(out.numpy(), x, f, at)


# None: the CUDA plan rule's choice at the reference width; a register tile of rows; a
# shared-memory plan.
@pytest.mark.parametrize("plan", [None, (4, 32), (4, 32, 4, 4, 16, 4)], ids=str)
@pytest.mark.parametrize("layer", LAYERS[:5] + LAYERS[7:], ids=str)
def test_the_cuda_kernel_computes_the_reference_at_every_width_run_serially(layer, plan):
    """The CUDA schedule of one kernel for every width, its thread loops left serial and
    compiled for the CPU (as test_kernels checks the static CUDA kernels): its row loop in
    whole tiles, its grid an expression of the width. The GPU run needs a GPU."""
    from conv1d_transpose.compile.kernels import schedule_cuda

    geometry, offset = _layer(*layer)
    width = symbolic_width.fit(symbolic_width.layer_at(geometry, offset))
    kernel = kernel_geometry(geometry)
    func, layout = schedule_cuda.build(kernel, bind_threads=False, width=width,
                                       plan=schedule_cuda.CudaPlan(*plan) if plan else None)
    library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=tvm.target.Target({"kind": "llvm"}))
    rng = np.random.default_rng(1)
    f = rng.standard_normal((geometry.kernel_width, geometry.out_channels,
                             geometry.in_channels)).astype(np.float32)
    packed = tvm.runtime.tensor(pack_filters(np.ascontiguousarray(fold_filters(f, kernel)),
                                             layout))
    for w in (1, 2, 7, 33, 100, 257, 1000):
        at = symbolic_width.layer_at(geometry, offset)(w)
        if at.out_width < 1:
            continue
        x = rng.standard_normal(at.input_shape).astype(np.float32)
        out = tvm.runtime.tensor(np.full(at.output_shape, np.nan, np.float32))
        library["main"](tvm.runtime.tensor(x), packed, out)
        _check(out.numpy(), x, f, at)


def test_a_dynamic_width_model_lowers_to_one_cuda_kernel():
    """The lowering takes a free width on CUDA too: one symbolic-width kernel, its launch
    bound to blocks and threads, compiled to CUDA C that takes the width at run time."""
    from tvm import tirx

    from conv1d_transpose.compile import lowering
    from conv1d_transpose.compile.importer import import_onnx
    from conv1d_transpose.graph import build_model, make_spec

    f = np.random.default_rng(0).standard_normal((16, 8, 16)).astype(np.float32)
    spec = make_spec((1, 16, 20), f.shape, (1, 8, 160), 8, "SAME", "NCW", 1, "float32")
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host={"kind": "llvm"})
    mod, scheduled = lowering.apply(import_onnx(build_model(spec, f, dynamic_width=True)),
                                    target)
    assert scheduled
    kernels = [func for _, func in mod.functions_items() if isinstance(func, tirx.PrimFunc)
               and "conv1d_transpose.schedule" in func.attrs]
    assert [str(k.attrs["conv1d_transpose.schedule"]) for k in kernels] == ["symbolic-width"]
    script = kernels[0].script()
    assert "width = T.int32()" in script and "blockIdx.x" in script
    executable = tvm.compile(mod, target=target)
    modules = [executable.mod]
    for module in modules:
        modules.extend(module.imports)
    (cuda,) = [m for m in modules if m.kind == "cuda"]
    source = cuda.inspect_source("cuda")
    assert "conv1d_transpose_polyphase" in source and "int width" in source


@pytest.mark.parametrize("winograd", [False, True])
def test_both_forms_take_a_symbolic_width_and_inf_stays_where_the_reference_has_it(winograd):
    geometry, offset = _layer(64, 48, 16, 8, 1, 4, 4, "NCW")
    cpu_plan = schedule_cpu.plan(geometry, schedule_cpu.describe_target(host_target()),
                                 winograd=winograd)
    kernel, layout, _ = _build(geometry, offset, cpu_plan)
    assert layout.winograd == winograd
    rng = np.random.default_rng(1)
    f = rng.standard_normal((16, 48, 64)).astype(np.float32)
    packed = tvm.runtime.tensor(pack_filters(f, layout))
    for w in (1, 7, 50, 333):
        at = symbolic_width.layer_at(geometry, offset)(w)
        x = rng.standard_normal(at.input_shape).astype(np.float32)
        x[0, 3, w // 2] = np.inf  # the Winograd form's check and fix pass at this width
        out = tvm.runtime.empty(at.output_shape, "float32", tvm.cpu())
        kernel(tvm.runtime.tensor(x), packed, out)
        exact = reference_conv1d_transpose(x, f, types.SimpleNamespace(
            **{k: getattr(at, k) for k in ("batch", "in_width", "out_width", "out_channels",
                                           "kernel_width", "stride", "dilation",
                                           "pad_begin", "data_format")}))
        y = out.numpy()
        assert np.array_equal(np.isnan(y), np.isnan(exact)), w
        assert np.array_equal(np.isinf(y), np.isinf(exact)), w
        finite = np.isfinite(exact)
        np.testing.assert_allclose(y[finite], exact[finite], rtol=1e-4, atol=1e-4)


def test_a_symbolic_batch_and_width_take_the_direct_form():
    geometry, offset = _layer(32, 16, 4, 2, 1, 1, 1, "NWC", batch=None)
    kernel, layout, _ = _build(geometry, offset)
    assert not layout.winograd  # its schedule fuses the batch loop
    rng = np.random.default_rng(2)
    f = rng.standard_normal((4, 16, 32)).astype(np.float32)
    packed = tvm.runtime.tensor(pack_filters(f, layout))
    for batch, w in ((1, 5), (3, 40), (2, 129)):
        at = dataclasses.replace(symbolic_width.layer_at(geometry, offset)(w), batch=batch)
        x = rng.standard_normal(at.input_shape).astype(np.float32)
        out = tvm.runtime.empty(at.output_shape, "float32", tvm.cpu())
        kernel(tvm.runtime.tensor(x), packed, out)
        _check(out.numpy(), x, f, at)


def test_fit_finds_the_affine_sizes_and_refuses_what_is_not():
    geometry, offset = _layer(64, 32, 16, 8, 1, 4, 4, "NCW")
    width = symbolic_width.fit(symbolic_width.layer_at(geometry, offset))
    for w in (1, 2, 50, 1000):
        layer = symbolic_width.layer_at(geometry, offset)(w)
        from conv1d_transpose.compile.kernels import decompose
        assert width.out_width.at(w) == layer.out_width
        assert width.rows.at(w) == decompose(layer).rows
    assert width.padded_rows(6) == "(((width + 1) + 5) // 6 * 6)"
    # A layer whose sizes change but not with the width (a different stride at each
    # width) is no layer for one kernel.
    assert symbolic_width.fit(lambda w: dataclasses.replace(
        geometry, in_width=w, out_width=w * (1 + w % 2), stride=1 + w % 2)) is None


def test_the_row_loop_splits_into_whole_chunks():
    """A split TVM cannot prove whole puts a guard on every block below it (NCW
    hifigan-up1 ran 0.67-0.83x the static kernel so): a plan's chunks of row tiles are
    one tile, or the rows are rounded up to whole chunks."""
    cpu = schedule_cpu.describe_target(host_target())
    geometry, offset = _layer(512, 256, 16, 8, 1, 4, 4, "NCW")
    width = symbolic_width.fit(symbolic_width.layer_at(geometry, offset))
    static = schedule_cpu.plan(geometry, cpu, winograd=False)
    assert static.phases_inner and static.chunk_tiles > 1
    chosen, chunked = schedule_cpu.symbolic_plan(geometry, cpu, width, static)
    assert chosen.chunk_tiles == 1 and chunked.tiles_per_chunk == 1
    blocked = dataclasses.replace(static, blocked=True, chunk_tiles=3)
    chosen, chunked = schedule_cpu.symbolic_plan(geometry, cpu, width, blocked)
    assert chunked.tiles_per_chunk == 3
    rows = chosen.tiling.rows * 3
    assert chunked.padded_rows(chosen.tiling.rows) == \
        f"(((width + 1) + {rows - 1}) // {rows} * {rows})"


# --- whole models: one build for every width -----------------------------------------

def _dynamic_op():
    f = np.random.default_rng(5).standard_normal((4, 3, 5)).astype(np.float32)
    return f, ct.Conv1DTranspose(f, [1, 16, 3], strides=4).to_onnx(dynamic_batch=True,
                                                                   dynamic_width=True)


def _expected(x, f):
    from conv1d_transpose.graph import make_spec

    batch, width = x.shape[:2]
    return ct.reference_conv1d_transpose(
        x, f, make_spec(x.shape, f.shape, [batch, 4 * width, 3], 4))


def test_tvm_runs_a_dynamic_width_model_from_one_build(cache_dir, count_builds):
    f, model = _dynamic_op()
    before = len(count_builds)  # (the op object builds its own static kernel)
    session = ct.InferenceSession(model, backend="tvm", cache_dir=cache_dir)
    assert session.backend == "tvm:host" and session.specialized is None
    builds = len(count_builds)
    assert builds == before + 1
    for batch, width in ((1, 4), (3, 9), (1, 1), (2, 300)):
        x = np.random.default_rng(width).standard_normal((batch, width, 5)).astype(np.float32)
        [y] = session.run(None, {"input": x})
        np.testing.assert_allclose(y, _expected(x, f), rtol=1e-4, atol=1e-4)
    assert len(count_builds) == builds  # no build per width
    assert session._session.scheduled


def test_auto_checks_each_width_class_against_onnxruntime(cache_dir, monkeypatch):
    from conv1d_transpose.runtime import BackendFallbackWarning, split_session
    from conv1d_transpose.runtime.symbolic_session import WidthCheckedSession

    f, model = _dynamic_op()
    timed = []

    def times(sessions, feeds, **kwargs):
        # TVM faster below 64 frames, onnxruntime from 64 up.
        width = next(iter(feeds.values())).shape[1]
        timed.append(width)
        return {"tvm": 1.0 if width < 64 else 3.0, "onnxruntime": 2.0}

    monkeypatch.setattr(split_session, "median_times", times)
    monkeypatch.delenv("CONV1D_TRANSPOSE_REMEASURE")  # (conftest sets it for other tests)
    session = ct.InferenceSession(model, backend="auto", cache_dir=cache_dir)
    assert isinstance(session._session, WidthCheckedSession)
    for width, backend in ((9, "tvm:host"), (12, "tvm:host"), (100, "onnxruntime:cpu"),
                           (8, "tvm:host")):
        x = np.random.default_rng(width).standard_normal((1, width, 5)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            [y] = session.run(None, {"input": x})
        np.testing.assert_allclose(y, _expected(x, f), rtol=1e-4, atol=1e-4)
        assert session.backend == backend, width
        assert set(session.placement.values()) == {backend}
        fallback = [w for w in caught if issubclass(w.category, BackendFallbackWarning)]
        assert bool(fallback) == (width == 100), width
    # Widths 8-15 are one class: timed once; 100 (64-127) once.
    assert timed == [9, 100]
    assert session.width_checks == {
        (("input", (1, 4, 5)),): {"backend": "tvm:host",
                                  "ms": {"tvm:host": 1000.0, "onnxruntime:cpu": 2000.0}},
        (("input", (1, 7, 5)),): {"backend": "onnxruntime:cpu",
                                  "ms": {"tvm:host": 3000.0, "onnxruntime:cpu": 2000.0}}}
    with pytest.raises(ct.ArgumentError, match="input"):
        session.run(None, {"input": np.zeros((1, 4, 6), np.float32)})

    # A later process (a new session on the same cache) takes each class's outcome from
    # the cache without timing it again, and says so where it is onnxruntime.
    again = ct.InferenceSession(model, backend="auto", cache_dir=cache_dir)
    for width, backend in ((10, "tvm:host"), (90, "onnxruntime:cpu")):
        x = np.random.default_rng(width).standard_normal((1, width, 5)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            [y] = again.run(None, {"input": x})
        np.testing.assert_allclose(y, _expected(x, f), rtol=1e-4, atol=1e-4)
        assert again.backend == backend
        said = [str(w.message) for w in caught if issubclass(w.category, BackendFallbackWarning)]
        assert bool(said) == (width == 90) and all("remembered" in m for m in said)
    assert timed == [9, 100]
    assert again.width_checks == session.width_checks
    # ... unless told to measure again; a class not seen before is timed.
    monkeypatch.setenv("CONV1D_TRANSPOSE_REMEASURE", "1")
    third = ct.InferenceSession(model, backend="auto", cache_dir=cache_dir)
    for width in (10, 300):
        third.run(None, {"input": np.zeros((1, width, 5), np.float32)})
    assert timed == [9, 100, 10, 300]


def test_a_model_tvm_cannot_import_whole_is_still_specialised(cache_dir):
    """EnCodec's dynamic export computes its pads at run time (the shape arithmetic TVM's
    importer stops at), so its Convs' inputs have no typed shape: one static model per
    input shape, as before, without a try at TVM."""
    from conv1d_transpose import architectures
    from conv1d_transpose.runtime.specialized_session import SpecializedSession

    model = architectures.build("encodec-decoder", dynamic=True)
    from conv1d_transpose.runtime import symbolic_session
    assert symbolic_session.whole_model(model) is None
    session = ct.InferenceSession(model, backend="tvm", cache_dir=cache_dir)
    assert isinstance(session._session, SpecializedSession)


def test_a_small_dynamic_hifigan_runs_from_one_build_and_matches_onnxruntime(cache_dir,
                                                                             count_builds):
    """The generator reads no shape, so TVM imports its free time axis as it is: every
    Conv (written as a ConvTranspose) and ConvTranspose on the one symbolic-width kernel
    build, the same answer as onnxruntime at every width."""
    import onnxruntime

    from conv1d_transpose.architectures import hifigan_v1
    from conv1d_transpose.runtime.tvm_backend import TVMSession

    model = hifigan_v1(mel_channels=8, initial_channels=32, upsample_rates=(4, 2),
                       upsample_kernels=(8, 4), resblock_kernels=(3, 5),
                       resblock_dilations=((1, 3), (1, 3)), dynamic=True)
    session = ct.InferenceSession(model, backend="tvm", cache_dir=cache_dir)
    assert isinstance(session._session, TVMSession) and session._session.scheduled
    assert len(count_builds) == 1
    reference = onnxruntime.InferenceSession(model.SerializeToString(),
                                             providers=["CPUExecutionProvider"])
    for frames in (1, 5, 17, 40):
        mel = np.random.default_rng(frames).standard_normal((1, 8, frames)).astype(np.float32)
        [y] = session.run(None, {"mel": mel})
        [expected] = reference.run(None, {"mel": mel})
        assert y.shape == (1, 1, frames * 8)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert len(count_builds) == 1


def test_the_dynamic_width_bench_checks_and_times_one_build_against_the_others(cache_dir):
    from rich.console import Console

    from conv1d_transpose import dynamic_bench

    from conv1d_transpose.workloads import Workload

    layer = Workload("tiny", 1, 16, 8, 4, 4, 2, data_format="NCW")
    document = dynamic_bench.run_dynamic_bench([layer], (25, 200), rounds=1, quick=True,
                                               cache_dir=cache_dir)
    [row] = document["layers"]
    assert row["dynamic_backend"] == "tvm:host" and row["dynamic_scheduled"]
    assert [entry["width"] for entry in row["frames"]] == [2, 16]
    for entry in row["frames"]:
        assert set(entry["results"]) == set(dynamic_bench.BACKENDS)
        for result in entry["results"].values():
            assert result["status"] == "ok" and result["median_ms"] > 0
        assert set(dynamic_bench.ratios(entry)) == {"vs_onnxruntime", "vs_static"}
    assert {record["status"] for record in document["records"]} == {"ok"}
    console = Console(record=True, width=120)
    dynamic_bench.render_dynamic(document, console)
    assert "tiny" in console.export_text()
    with pytest.raises(ct.ArgumentError, match="hifigan-up1"):
        dynamic_bench.layers_named(["nope"])
    with pytest.raises(ct.ArgumentError, match="'NWC' or 'NCW'"):
        dynamic_bench.layers_named([], "NHWC")
    assert {layer.data_format for layer in dynamic_bench.layers_named([], "NWC")} == {"NWC"}
    assert len(dynamic_bench.layers_named(["hifigan-up2", "encodec-up1"])) == 2
