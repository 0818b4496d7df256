"""The width form with a symbolic width (compile/kernels/source_width.py, `width=`): one
kernel for every input width, against a float64 numpy ConvTranspose at widths around
its tile (1 up to 1000, both loop nests and the width where it switches), over output
channels, taps, dilations and pads; its sizes against the static layout's at every
width; and the lowering's choice of it for a dynamic-width model, compiled as
compile/build.py compiles such kernels (apart from the Relax shape functions)."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from conv1d_transpose.compile.kernels import schedule_cpu_width, source_width
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget
from conv1d_transpose.compile.kernels.symbolic_width import (REFERENCE_WIDTH, fit, layer_at,
                                                             smallest_width)

RNG = np.random.default_rng(30)
ZEN4 = CpuTarget(512, 32, 2)
WIDTHS = (1, 2, 15, 16, 17, 63, 64, 65, 200, 1000)


def conv_transpose_reference(x, f, pad_begin, out_width, dilation):
    """Stride-1 ConvTranspose from its definition, in float64: out[o] = sum_k f[k] @
    x[o + pad_begin - k*d]. x [N, Cin, W], f [Cin, Cout, K]."""
    N, _, W = x.shape
    _, cout, K = f.shape
    out = np.zeros((N, cout, out_width))
    xd, fd = x.astype(np.float64), f.astype(np.float64)
    for k in range(K):
        # Output positions o whose input row o + pad_begin - k*d is inside [0, W).
        first = max(0, k * dilation - pad_begin)
        last = min(out_width, W + k * dilation - pad_begin)
        if last > first:
            rows = slice(first + pad_begin - k * dilation, last + pad_begin - k * dilation)
            out[:, :, first:last] += np.einsum("ncw,co->now", xd[:, :, rows], fd[:, :, k])
    return out


def layer(batch, cin, cout, K, d, pb, pe):
    """The stride-1 NCW layer as a function of its input width."""
    offset = (K - 1) * d - pb - pe
    return layer_at(Geometry(batch, 0, cin, 0, cout, K, 1, d, pb, "NCW", "float32"), offset)


@pytest.fixture(scope="module")
def target():
    from conv1d_transpose.compile.targets import get_target
    from conv1d_transpose.compile.kernels.schedule_cpu import describe_target

    host = get_target("host").tvm_target()
    if describe_target(host).vector_bits != 512:
        pytest.skip("the width form needs AVX-512")
    return host


# (batch, Cin, Cout, K, dilation, pad_begin, pad_end): HiFi-GAN's resblock and conv_post
# shapes; 'same' pads, a ConvTranspose's own (0, 0) and uneven ones, all of the span on
# one side, a 'valid' Conv rewritten (pads (span, span): an output narrower than the
# input, read from x itself), a 1x1 conv (x itself), a channel tail, batch 2.
LAYERS = [
    (1, 64, 64, 3, 1, 1, 1),
    (1, 64, 64, 11, 5, 25, 25),
    (1, 32, 1, 7, 1, 3, 3),
    (2, 5, 3, 7, 3, 9, 9),
    (1, 8, 6, 11, 1, 0, 0),
    (1, 4, 1, 3, 5, 7, 2),
    (1, 1, 3, 11, 1, 10, 0),
    (2, 32, 16, 3, 1, 2, 2),
    (1, 16, 33, 1, 1, 0, 0),
    (1, 3, 16, 7, 3, 0, 18),
]


def run(func, layout, shape, widths, target):
    """{width: (kernel output, reference)} of one compiled symbolic-width kernel, the
    kernel compiled alone in an LLVM module as build._compile_kernels_apart does."""
    import tvm

    N, cin, cout, K, d, pb, pe = shape
    at = layer(*shape)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         target=target, pipeline="default")
    f = RNG.standard_normal((cin, cout, K)).astype(np.float32)
    packed = tvm.runtime.tensor(source_width.pack_filters(f.transpose(2, 1, 0), layout))
    results = {}
    for width in widths:
        out_width = at(width).out_width
        if out_width < 1:
            continue  # (an empty output: the op answers without a kernel)
        x = RNG.standard_normal((N, cin, width)).astype(np.float32)
        # NaN where nothing is stored: a position the kernel missed shows.
        out = tvm.runtime.tensor(np.full((N, cout, out_width), np.nan, np.float32))
        lib["main"](tvm.runtime.tensor(x), packed, out)
        results[width] = out.numpy(), conv_transpose_reference(x, f, pb, out_width, d)
    return results


@pytest.mark.parametrize("shape", LAYERS, ids=str)
def test_one_kernel_computes_conv_transpose_at_every_width(shape, target):
    at = layer(*shape)
    func, layout = schedule_cpu_width.build(at(REFERENCE_WIDTH), target, width=fit(at))
    sizes = source_width.symbolic_sizes(layout, fit(at))
    # Both nests, and the widths on either side of the switch between them.
    widths = sorted({*WIDTHS, sizes.long_from - 1, sizes.long_from, sizes.long_from + 1}
                    - {0})
    results = run(func, layout, shape, widths, target)
    assert any(w < sizes.long_from for w in results) == sizes.short
    cin, K = shape[1], shape[3]
    for width, (got, expected) in results.items():
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.sqrt(cin * K),
                                   err_msg=f"width {width}")


def test_both_paths_of_the_long_nest_are_covered(target):
    """A layer whose long nest reads a zero-padded copy and one that reads x itself."""
    padded = set()
    for shape in LAYERS:
        at = layer(*shape)
        layout = schedule_cpu_width.layout_for(at(REFERENCE_WIDTH), ZEN4)
        padded.add(source_width.symbolic_sizes(layout, fit(at)).padded)
    assert padded == {True, False}


@pytest.mark.parametrize("K,d", [(1, 1), (3, 1), (7, 3), (11, 5)])
def test_the_sizes_are_the_static_layout_s_at_every_width(K, d):
    """symbolic_sizes against WidthLayout at each width, for pairs of pads from none to
    past twice the span: the long nest's sizes are the static kernel's, and the static
    kernel takes one tile (a guarded store) exactly where the short nest runs."""
    span = (K - 1) * d
    pads = sorted({0, 1, span // 2, span - 1, span, span + 1, 2 * span + 1} - {-1})
    for cout, pb, pe in itertools.product((1, 8), pads, pads):
        at = layer(1, 4, cout, K, d, pb, pe)
        if at(REFERENCE_WIDTH).out_width < 1:
            continue
        width = fit(at)
        layout = schedule_cpu_width.layout_for(at(REFERENCE_WIDTH), ZEN4)
        sizes = source_width.symbolic_sizes(layout, width)
        assert sizes is not None, (cout, pb, pe)
        for w in range(smallest_width(width), sizes.long_from + 2 * layout.tile + span):
            static = dataclasses.replace(layout, geometry=at(w))
            if w < sizes.long_from:
                assert static.span > static.geometry.out_width and sizes.short
                continue
            assert static.span == static.geometry.out_width == sizes.span.at(w)
            assert static.padded_width == sizes.padded_width.at(w)
            assert source_width.pad_bounds(static) == (sizes.lo.at(w), sizes.hi.at(w))
            assert static.padded == sizes.padded


@pytest.mark.slow
@pytest.mark.parametrize("shape", [
    (N, cin, cout, K, d, pb, pe)
    for N, cin, cout, K, d in itertools.product((1, 2), (3, 32), (1, 5, 16, 64), (1, 3, 7, 11),
                                                (1, 3, 5))
    if K > 1 or d == 1
    for pb, pe in {((K - 1) * d // 2, (K - 1) * d - (K - 1) * d // 2), (0, 0),
                   ((K - 1) * d, 0), (0, (K - 1) * d)}][::5], ids=str)
def test_one_kernel_computes_conv_transpose_on_more_layers(shape, target):
    at = layer(*shape)
    func, layout = schedule_cpu_width.build(at(REFERENCE_WIDTH), target, width=fit(at))
    for width, (got, expected) in run(func, layout, shape, range(1, 300), target).items():
        np.testing.assert_allclose(got, expected, rtol=1e-4,
                                   atol=1e-4 * np.sqrt(shape[1] * shape[3]),
                                   err_msg=f"width {width}")


# --- the lowering ---------------------------------------------------------------------

def dynamic_width_model(cin, cout, K, d, dynamic_batch=False, seed=0):
    """A stride-1 NCW ConvTranspose ('SAME': output as wide as the input) with a free
    width, as graph.build_model exports it; and its TF-layout filters."""
    from conv1d_transpose.graph import build_model, make_spec

    f = np.random.default_rng(seed).standard_normal((K, cout, cin)).astype(np.float32)
    spec = make_spec((1, cin, 20), f.shape, (1, cout, 20), 1, "SAME", "NCW", d, "float32")
    return build_model(spec, f, dynamic_batch=dynamic_batch, dynamic_width=True), f


def lowered_schedules(model, target):
    from tvm import tirx

    from conv1d_transpose.compile import lowering
    from conv1d_transpose.compile.importer import import_onnx

    mod, scheduled = lowering.apply(import_onnx(model), target)
    assert scheduled
    return mod, [func.attrs["conv1d_transpose.schedule"] for _, func in mod.functions_items()
                 if isinstance(func, tirx.PrimFunc)
                 and "conv1d_transpose.schedule" in func.attrs]


def test_the_lowering_takes_the_symbolic_width_form(target):
    from conv1d_transpose.compile import build

    model, _ = dynamic_width_model(8, 5, 7, 3)
    mod, schedules = lowered_schedules(model, target)
    assert schedules == ["symbolic-width:width"]
    assert build._symbolic_kernels(mod)  # compiled in an LLVM module of its own
    # A symbolic batch too: the channel form (the width form's schedule fuses the batch).
    model, _ = dynamic_width_model(8, 5, 7, 3, dynamic_batch=True)
    assert lowered_schedules(model, target)[1] == ["symbolic-width"]
    # Past the width form's rule (256 channels at K 3): the channel form.
    model, _ = dynamic_width_model(256, 256, 3, 3)
    assert lowered_schedules(model, target)[1] == ["symbolic-width"]


def test_one_artifact_runs_the_width_form_at_several_widths(target, tmp_path, monkeypatch):
    from conv1d_transpose.compile import build
    from conv1d_transpose.compile.artifact import compile_model
    from conv1d_transpose.graph import make_spec, max_error
    from conv1d_transpose.runtime.tvm_backend import TVMSession

    apart = []
    compile_apart = build._compile_kernels_apart
    monkeypatch.setattr(build, "_compile_kernels_apart",
                        lambda mod, *a: apart.append(build._symbolic_kernels(mod))
                        or compile_apart(mod, *a))
    cin, cout, K, d = 8, 5, 7, 3
    model, f = dynamic_width_model(cin, cout, K, d)
    artifact = compile_model(model, cache_dir=tmp_path)
    assert apart == [True]
    assert artifact.inputs[0]["shape"] == [1, cin, "in_width"]
    session = TVMSession(artifact)
    for width in (1, 17, 95, 96, 97, 300):
        x = RNG.standard_normal((1, cin, width)).astype(np.float32)
        spec = make_spec(x.shape, f.shape, (1, cout, width), 1, "SAME", "NCW", d, "float32")
        (y,) = session.run(None, {"input": x})
        error, ok = max_error(y, x, f, spec)
        assert ok, f"width {width}: max error {error}"
    assert session.scheduled
