"""The phase width form of a strided NCW layer (compile/kernels/source_phase_width.py,
schedule_cpu_width.build_phase): static and symbolic-width kernels against the float64
reference (graph/reference.py) over strides, taps per phase, pads, output padding,
channel tails, one output channel and batch 2, at widths on both sides of every switch
(no interior tile, the first tile, overlapping last tiles); Inf and NaN inputs; its
symbolic sizes against the static layout's at every width; the rule of which layers take
it; and the lowering's choice of it, through a compiled artifact at several widths."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from conv1d_transpose.compile.kernels import schedule_cpu_width, source_phase_width
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile.kernels.schedule_cpu import CpuTarget
from conv1d_transpose.compile.kernels.symbolic_width import REFERENCE_WIDTH, layer_at
from conv1d_transpose.graph.reference import max_error

RNG = np.random.default_rng(7)
ZEN4 = CpuTarget(512, 32, 2)


@pytest.fixture(scope="module")
def target():
    from conv1d_transpose.compile.kernels.schedule_cpu import describe_target
    from conv1d_transpose.compile.targets import get_target

    host = get_target("host").tvm_target()
    if describe_target(host).vector_bits != 512:
        pytest.skip("the phase width form is laid out for AVX-512 (16 float32 lanes)")
    return host


def layer(batch, cin, cout, K, s, pb, pe, output_padding=0):
    """The NCW ConvTranspose (dilation 1) as a function of its input width: output
    `(W - 1)*s + K - pb - pe + output_padding`."""
    return layer_at(Geometry(batch, 0, cin, 0, cout, K, s, 1, pb, "NCW", "float32"),
                    K - s - pb - pe + output_padding)


def compiled(func, target):
    import tvm

    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=target, pipeline="default")


def check(lib, layout, at, widths, x_of=None):
    """Run one compiled kernel at each width (NaN where nothing is stored, so a missed
    position shows) and check it against the reference."""
    import tvm

    g0 = at(widths[0])
    f = RNG.standard_normal((g0.kernel_width, g0.out_channels, g0.in_channels)).astype(np.float32)
    packed = tvm.runtime.tensor(source_phase_width.pack_filters(f, layout))
    checked = 0
    for width in widths:
        g = at(width)
        if g.out_width < 1:
            continue
        x = RNG.standard_normal(g.input_shape).astype(np.float32)
        if x_of is not None:
            x = x_of(x)
        out = tvm.runtime.tensor(np.full(g.output_shape, np.nan, np.float32))
        lib["main"](tvm.runtime.tensor(x), packed, out)
        error, ok = max_error(out.numpy(), x, f, g)
        assert ok, f"width {width}: max error {error}"
        checked += 1
    assert checked


# (batch, Cin, Cout, K, s, pad_begin, pad_end, output_padding): HiFi-GAN's upsamplers'
# (K 2s, pads (K - s)/2) and EnCodec's (no pads), one tap per phase (K = s), stride 3,
# uneven pads and output padding (an output that is not a multiple of s), pads past a
# phase's reach (an edge row whose every read is padding), a channel tail (Cout % R), one
# output channel at stride 8 and 16, batch 2.
LAYERS = [
    (1, 16, 8, 4, 2, 1, 1, 0),
    (1, 8, 8, 8, 4, 0, 0, 0),
    (2, 3, 5, 2, 2, 0, 0, 0),
    (1, 4, 6, 6, 3, 5, 0, 2),
    (1, 5, 9, 4, 2, 0, 3, 1),
    (1, 6, 1, 16, 8, 4, 4, 0),
    (1, 3, 1, 32, 16, 0, 9, 5),
    (2, 1, 7, 4, 2, 3, 3, 1),
]


@pytest.mark.parametrize("shape", LAYERS, ids=str)
def test_the_static_kernel_computes_conv_transpose(shape, target):
    at = layer(*shape)
    layout = schedule_cpu_width.phase_layout_for(at(64), ZEN4)
    assert layout.rows * layout.stride * layout.vectors <= schedule_cpu_width.ACCUMULATORS
    # The narrowest width whose interior holds a tile (the lowering's smallest), one
    # more, one overlapping the last tile, and a wide one.
    first = next(w for w in range(1, 200) if dataclasses.replace(layout, geometry=at(w)).long)
    for width in (first, first + 1, first + layout.tile - 1, 1000):
        static = dataclasses.replace(layout, geometry=at(width))
        func, _ = schedule_cpu_width.build_phase(at(width), target, static)
        check(compiled(func, target), static, at, [width])


def test_a_kernel_without_an_interior_tile_computes_every_row_at_the_edges(target):
    """The static source with no tile (only the edge nest), which the rule never takes
    but the source writes."""
    at = layer(1, 4, 3, 4, 2, 1, 1)
    layout = schedule_cpu_width.phase_layout_for(at(5), ZEN4)
    assert not layout.long and layout.edges == layout.all_rows
    func, _ = schedule_cpu_width.build_phase(at(5), target, layout)
    check(compiled(func, target), layout, at, [5])


@pytest.mark.parametrize("shape", LAYERS, ids=str)
def test_one_kernel_computes_conv_transpose_at_every_width(shape, target):
    at = layer(*shape)
    func, layout = schedule_cpu_width.build_phase(at(REFERENCE_WIDTH), target, symbolic=True)
    sizes = source_phase_width.symbolic_sizes(layout)
    assert sizes.short  # every layer here has inputs too narrow for a tile
    widths = sorted({1, 2, 3, 7, 16, 17, sizes.long_from - 1, sizes.long_from,
                     sizes.long_from + 1, sizes.long_from + layout.tile, 300, 1000, 4097})
    check(compiled(func, target), layout, at, widths)


@pytest.mark.parametrize("shape", [LAYERS[0], LAYERS[4]], ids=str)
def test_inf_and_nan_inputs_give_the_reference_s_answer(shape, target):
    """Inf and NaN where the reference has them, at an edge row and inside: every phase
    sums real taps only (no zero tap multiplies an Inf)."""
    at = layer(*shape)
    func, layout = schedule_cpu_width.build_phase(at(REFERENCE_WIDTH), target, symbolic=True)

    def specials(x):
        x[0, 0, 0] = np.inf
        x[-1, -1, -1] = -np.inf
        x[0, -1, x.shape[2] // 2] = np.nan
        return x

    check(compiled(func, target), layout, at, [10, 200], specials)


@pytest.mark.parametrize("K,s", [(2, 2), (4, 2), (6, 3), (8, 4), (16, 8)])
def test_the_sizes_are_the_static_layout_s_at_every_width(K, s):
    """symbolic_sizes against PhaseWidthLayout at each width, for pads from none to past
    K on either side and every output padding: the interior and the row count are the
    static kernel's from long_from on, and below it the static layout has no tile."""
    pads = sorted({0, 1, (K - s) // 2, K - 1, K, K + 1})
    for cout, pb, pe, op in itertools.product((1, 8), pads, pads, range(s)):
        at = layer(1, 4, cout, K, s, pb, pe, op)
        if at(REFERENCE_WIDTH).out_width < 1:
            continue
        layout = schedule_cpu_width.phase_layout_for(at(REFERENCE_WIDTH), ZEN4)
        sizes = source_phase_width.symbolic_sizes(layout)
        assert sizes is not None, (cout, pb, pe, op)
        for w in range(1, sizes.long_from + 2 * layout.tile + 2 * K):
            static = dataclasses.replace(layout, geometry=at(w))
            if static.geometry.out_width < 1:
                continue
            if w < sizes.long_from:
                assert not static.long
                continue
            assert static.long
            assert static.interior == (sizes.qa, sizes.qb.at(w))
            assert static.all_rows == sizes.all_rows.at(w)


def test_a_layer_without_the_form_is_refused_with_a_value_error():
    """The source and the build refuse a layer the form does not fit (K not a multiple
    of s, here), naming it, before anything is compiled."""
    at = layer(1, 4, 3, 5, 2, 1, 1)
    layout = source_phase_width.PhaseWidthLayout(at(REFERENCE_WIDTH), 4, 3)
    assert source_phase_width.symbolic_sizes(layout) is None
    with pytest.raises(ValueError, match="no symbolic-width form of the phase width kernel"):
        source_phase_width.phase_width_source(layout, symbolic=True)
    with pytest.raises(ValueError, match="kernel_width=5, stride=2"):
        schedule_cpu_width.build_phase(at(REFERENCE_WIDTH), "llvm", layout, symbolic=True)


def test_the_rule_takes_strided_ncw_layers_of_few_channels():
    def takes(cin, cout, K, s, W=6400, cpu=ZEN4, **changes):
        g = dataclasses.replace(layer(1, cin, cout, K, s, (K - s) // 2, (K - s) // 2)(W),
                                **changes)
        return schedule_cpu_width.applies_phase(g, cpu)

    # HiFi-GAN's last two upsamplers, EnCodec's third and fourth, one output channel at
    # strides up to 16.
    assert takes(128, 64, 4, 2) and takes(64, 32, 4, 2) and takes(128, 64, 8, 4)
    assert takes(64, 32, 8, 4) and takes(16, 1, 4, 2) and takes(32, 1, 32, 16)
    # Left to the channel form: 256 channels, strides past 4 with more than one output
    # channel, one channel past stride 16.
    assert not takes(256, 256, 4, 2) and not takes(256, 128, 16, 8)
    assert not takes(128, 64, 16, 8) and not takes(32, 2, 16, 8) and not takes(8, 1, 64, 32)
    # Only what the form fits: K a multiple of s, dilation 1, stride > 1, NCW, float32,
    # a static batch, AVX-512, an interior of at least one tile.
    assert not takes(64, 32, 5, 2) and not takes(64, 32, 4, 2, dilation=2)
    assert not takes(64, 32, 4, 2, data_format="NWC") and not takes(64, 32, 4, 2, batch=None)
    assert not takes(64, 32, 4, 2, dtype="float16") and not takes(64, 32, 4, 2, dtype="float64")
    assert not takes(64, 32, 4, 2, cpu=CpuTarget(256, 16, 2))
    assert not takes(64, 32, 4, 2, W=10)
    assert takes(64, 32, 4, 2, W=10 ** 6)


# --- the lowering ---------------------------------------------------------------------

def strided_model(cin, cout, K, s, dynamic_width, seed=0):
    """An NCW ConvTranspose ('SAME') as graph.build_model exports it, and its TF-layout
    filters."""
    from conv1d_transpose.graph import build_model, make_spec

    f = np.random.default_rng(seed).standard_normal((K, cout, cin)).astype(np.float32)
    spec = make_spec((1, cin, 20), f.shape, (1, cout, 20 * s), s, "SAME", "NCW", 1, "float32")
    return build_model(spec, f, dynamic_width=dynamic_width), f


def lowered_schedules(model, target):
    from tvm import tirx

    from conv1d_transpose.compile import lowering
    from conv1d_transpose.compile.importer import import_onnx

    mod, scheduled = lowering.apply(import_onnx(model), target)
    assert scheduled
    return [func.attrs["conv1d_transpose.schedule"] for _, func in mod.functions_items()
            if isinstance(func, tirx.PrimFunc) and "conv1d_transpose.schedule" in func.attrs]


def test_the_lowering_takes_the_phase_width_form(target):
    assert lowered_schedules(strided_model(16, 8, 4, 2, True)[0], target) == \
        ["symbolic-width:phase-width"]
    # One output channel: the phase form rather than the folded kernel.
    assert lowered_schedules(strided_model(16, 1, 4, 2, True)[0], target) == \
        ["symbolic-width:phase-width"]
    # Past the rule (256 channels): the channel form.
    assert lowered_schedules(strided_model(256, 8, 4, 2, True)[0], target) == \
        ["symbolic-width"]


def test_one_artifact_runs_the_phase_width_form_at_several_widths(target, tmp_path):
    from conv1d_transpose.compile.artifact import compile_model
    from conv1d_transpose.graph import make_spec
    from conv1d_transpose.runtime.tvm_backend import TVMSession

    cin, cout, K, s = 16, 6, 8, 4
    model, f = strided_model(cin, cout, K, s, True)
    session = TVMSession(compile_model(model, cache_dir=tmp_path))
    assert session.scheduled
    for width in (1, 5, 16, 17, 49, 50, 333):
        x = RNG.standard_normal((1, cin, width)).astype(np.float32)
        spec = make_spec(x.shape, f.shape, (1, cout, width * s), s, "SAME", "NCW", 1, "float32")
        (y,) = session.run(None, {"input": x})
        error, ok = max_error(y, x, f, spec)
        assert ok, f"width {width}: max error {error}"
