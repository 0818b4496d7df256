"""Few channels on the fast path (issue 27): one input channel, one output channel (an
ISTFT exported as ConvTranspose), small odd counts.

The channel sweep itself runs in test_conformance_tvm (host) and test_device (arm64);
here: where the folded form applies, its filter order, its kernel against the reference
and what the lowering emits for it, the exact call the issue reported, tuning a folded
layer, and `auto`'s words when a TVM build fails.
"""
import re
import warnings

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import conv1d_transpose as ct
from conv1d_transpose.compile import lowering, records, tuning
from conv1d_transpose.compile.kernels import (Geometry, fold_filters, fold_phases,
                                              kernel_geometry)
from conv1d_transpose.compile.kernels import folding, schedule_cpu
from conv1d_transpose.compile.targets import get_target
from conv1d_transpose.graph import build_model, make_spec, max_error
from conv1d_transpose.runtime import BackendFallbackWarning


def host_target():
    return get_target("host").tvm_target()


def layer(batch=1, width=6, cin=3, out_width=None, cout=1, K=8, s=4, d=1, padding="VALID",
          layout="NWC", dtype="float32"):
    from conv1d_transpose.graph import shapes
    out_width = out_width or max(shapes.valid_output_widths(width, K, s, d, padding))
    nwc = layout == "NWC"
    return make_spec((batch, width, cin) if nwc else (batch, cin, width), (K, cout, cin),
                     (batch, out_width, cout) if nwc else (batch, cout, out_width), s,
                     padding, layout, d, dtype)


# --- the folded form ------------------------------------------------------------------


@pytest.mark.parametrize("K, s, d, cout, folds", [
    (4096, 1024, 1, 1, True),  # htdemucs' ISTFT
    (8, 4, 1, 8, True),  # Demucs' last decoder layer (64 -> 8 channels)
    (5, 5, 1, 5, True),  # K = s: one tap per phase
    (16, 8, 1, folding.FOLD_BELOW_CHANNELS, False),  # a whole vector of channels already
    (6, 4, 1, 1, False),  # phases with 2 and 1 taps: folding would pad taps
    (8, 4, 2, 1, False),  # dilated: half the phases get no tap
    (3, 1, 1, 1, False),  # stride 1: nothing to fold
])
def test_fold_applies_only_where_every_phase_has_k_over_s_taps(K, s, d, cout, folds):
    width = (10 - 1) * s + (K - 1) * d + 1
    geometry = Geometry(1, 10, 3, width, cout, K, s, d, 0, "NWC", "float32")
    folded = fold_phases(geometry)
    assert (folded is not None) == folds
    if folds:
        assert (folded.stride, folded.kernel_width, folded.out_channels) == (1, K // s, s * cout)
        assert (folded.folded_stride, folded.folded_width) == (s, width)
        assert folded.output_shape == geometry.output_shape  # it writes the layer's output
        assert kernel_geometry(geometry) == folded
    else:
        assert kernel_geometry(geometry) == geometry


def test_folded_filters_put_phase_r_of_channel_c_where_the_store_reads_it():
    """Tap a*s + r of output channel c is the folded kernel's tap a of channel r*Cout + c
    (NWC, phase-major) or c*s + r (NCW, channel-major)."""
    K, s, cout, cin = 8, 4, 3, 2
    f = np.arange(K * cout * cin, dtype=np.float32).reshape(K, cout, cin)
    for layout, channel in (("NWC", lambda r, c: r * cout + c), ("NCW", lambda r, c: c * s + r)):
        geometry = fold_phases(Geometry(1, 5, cin, 28, cout, K, s, 1, 0, layout, "float32"))
        folded = fold_filters(f, geometry)
        assert folded.shape == (K // s, s * cout, cin)
        for a in range(K // s):
            for r in range(s):
                for c in range(cout):
                    np.testing.assert_array_equal(folded[a, channel(r, c)], f[a * s + r, c])


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("layout", ["NWC", "NCW"])
@pytest.mark.parametrize("K, s, cout, which", [(8, 4, 1, 0), (8, 4, 3, -1), (6, 3, 2, 1),
                                                (4, 4, 5, 0), (12, 3, 1, -1)])
def test_folded_kernel_computes_the_layer(K, s, cout, which, layout, padding):
    """Through the lowering, for every valid output width kind (SAME's pad_begin, the
    widest with output_padding), batch 2: the layer's own answer, from a folded kernel."""
    from conv1d_transpose.graph import shapes
    widths = list(shapes.valid_output_widths(5, K, s, 1, padding))
    spec = layer(batch=2, width=5, cin=3, out_width=widths[which], cout=cout, K=K, s=s,
                 padding=padding, layout=layout)
    assert f"out_channels={s * cout}" in str(kernel_geometry(Geometry.from_spec(spec)))
    y, x, f, _ = run_layer(spec)
    error, ok = max_error(y, x, f, spec)
    assert ok, error


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("layout", ["NWC", "NCW"])
@pytest.mark.parametrize("K, s, cout", [
    (16, 4, 1), pytest.param(8, 4, 3, marks=pytest.mark.slow),
    pytest.param(12, 2, 2, marks=pytest.mark.slow)])
def test_folded_winograd_kernel_computes_the_layer(K, s, cout, layout, padding):
    """The F(2, r) form of a folded kernel (4 taps: two F(2,2) blocks, like a Vocos ISTFT;
    2 taps; 6 taps: two F(2,3)) in each loop order: its copy of the kernel's rows,
    scattered to the layer's positions, is the layer's output, batch 2, SAME's cut rows."""
    from conv1d_transpose.compile.kernels import pack_filters, winograd

    spec = layer(batch=2, width=9, cin=5, cout=cout, K=K, s=s, padding=padding, layout=layout)
    geometry = kernel_geometry(Geometry.from_spec(spec))
    assert geometry.folded_stride == s and winograd.applies(geometry)
    cpu = schedule_cpu.describe_target(host_target())
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.input_shape).astype(spec.dtype)
    f = rng.standard_normal(spec.filters_shape).astype(spec.dtype)
    for order in ("rows", "filters"):
        cpu_plan = schedule_cpu.plan(geometry, cpu, winograd=True, order=order)
        assert cpu_plan.winograd, cpu_plan
        func, kernel_layout = schedule_cpu.build(geometry, host_target(), cpu_plan)
        lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=host_target()).jit()
        out = tvm.runtime.empty(spec.output_shape, spec.dtype)
        lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(
            pack_filters(fold_filters(f, geometry), kernel_layout)), out)
        error, ok = max_error(out.numpy(), x, f, spec)
        assert ok, (order, error)


# --- what the lowering emits ----------------------------------------------------------


def lowered(spec, f=None):
    """(the lowered Relax module, its kernel PrimFunc) for `spec` with filters `f`."""
    if f is None:
        f = np.random.default_rng(0).standard_normal(spec.filters_shape).astype(spec.dtype)
    mod, scheduled = lowering.apply(from_onnx(build_model(spec, f, form="explicit")),
                                    host_target())
    assert scheduled
    (kernel,) = [func for _, func in mod.functions_items()
                 if isinstance(func, tvm.tirx.PrimFunc) and func.attrs
                 and "conv1d_transpose.schedule" in func.attrs]
    return mod, kernel


def run_layer(spec):
    """The layer through the lowering and the VM on random data: (output, input, filters,
    kernel PrimFunc)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.input_shape).astype(spec.dtype)
    f = rng.standard_normal(spec.filters_shape).astype(spec.dtype)
    mod, kernel = lowered(spec, f)
    vm = relax.VirtualMachine(tvm.compile(mod, target=host_target()), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy(), x, f, kernel


def vm_functions(mod):
    """The names of the VM's functions (kernels and builtins) after the whole pipeline."""
    listed = tvm.compile(mod, target=host_target()).stats().split("Globals")[1]
    return set(listed[listed.index("[") + 1:listed.index("]")].split(", "))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("layout", ["NWC", "NCW"])
def test_a_folded_layer_is_one_kernel_reading_and_writing_the_layers_tensors(layout, padding):
    """No transpose, reshape or crop around it: the folded kernel reads the layer's input
    and stores each (phase, channel) pair at its output position."""
    spec = layer(width=6, cin=5, cout=3, K=32, s=8, layout=layout, padding=padding)
    mod, kernel = lowered(spec)
    script = kernel.script()
    assert f"x: T.Buffer({spec.input_shape}" in script
    assert f"out: T.Buffer({spec.output_shape}" in script
    # Packed filters of 32/8 = 4 taps, 5 input channels, 8*3 channels: in NWC one 32-wide
    # tile; in NCW (filters in cache) the one-vector rows plan, two 16-wide blocks.
    packed = re.search(r"filters: T.Buffer\(\(([\d, ]+)\)", script).group(1)
    tiles = [1, 1, 4, 5, 32] if layout == "NWC" else [1, 2, 4, 5, 16]
    assert sorted(int(v) for v in packed.split(", ")) == tiles
    functions = vm_functions(mod)
    assert not {"transpose", "reshape", "strided_slice"} & functions
    assert "conv1d_transpose_polyphase" in functions


# --- the calls issue 27 reported ------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_one_input_channel_builds_and_matches_the_reference(dtype):
    """`KeyError: 'vci'` from the CPU schedule before (TVM drops unit loops)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 10, 1)).astype(dtype)
    f = rng.standard_normal((5, 5, 1)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        y = ct.conv1d_transpose(x, f, [1, 54, 5], 5, padding="VALID", backend="tvm")
        op = ct.Conv1DTranspose(f, [1, 54, 5], 5, padding="VALID", backend="auto")
        assert op.backend == "tvm:host"
    spec = make_spec(x.shape, f.shape, [1, 54, 5], 5, "VALID", "NWC", 1, dtype)
    assert max_error(y, x, f, spec)[1]
    assert max_error(op(x), x, f, spec)[1]


@pytest.mark.parametrize("K, s, d, rows", [(1, 1, 1, 1), (3, 2, 2, 2), (5, 5, 1, 3)])
def test_one_input_channel_has_no_channel_loop_in_any_plan(K, s, d, rows):
    """Every candidate plan of a one-channel layer builds (the tuner's too)."""
    from conv1d_transpose.graph import shapes
    spec = layer(width=rows, cin=1, cout=7, K=K, s=s, d=d, padding="SAME",
                 out_width=min(shapes.valid_output_widths(rows, K, s, d, "SAME")))
    geometry = kernel_geometry(Geometry.from_spec(spec))
    bench = tuning._Bench(spec, host_target())
    plans = schedule_cpu.candidate_plans(geometry, schedule_cpu.describe_target(host_target()))
    for plan in plans:
        candidate = tuning.Candidate("plan", {"kind": "plan",
                                              "plan": records.plan_to_dict(plan)})
        assert bench.build(candidate), (plan, candidate.problem)


def test_a_failed_tvm_build_is_reported_in_words(monkeypatch):
    """An internal error (a schedule bug) is a BackendError that says so; `auto` falls
    back with that sentence, never a bare exception text such as "'vci'"."""
    def broken(*args, **kwargs):
        raise KeyError("vci")

    monkeypatch.setattr(schedule_cpu, "schedule", broken)
    x = np.ones((1, 10, 3), np.float32)
    f = np.ones((4, 20, 3), np.float32)
    with pytest.raises(ct.BackendError, match=r"internal error \(KeyError\), a bug") as raised:
        ct.conv1d_transpose(x, f, [1, 20, 20], 2, backend="tvm")
    assert "vci" not in str(raised.value)
    with pytest.warns(BackendFallbackWarning) as caught:
        op = ct.Conv1DTranspose(f, [1, 20, 20], 2, backend="auto")
    assert op.backend == "onnxruntime:cpu"
    message = str(caught[0].message)
    assert "internal error (KeyError)" in message and "vci" not in message


# --- tuning a folded layer -------------------------------------------------------------


def test_tune_records_the_folded_kernel_and_the_lowering_applies_it(tmp_path, monkeypatch,
                                                                    limit_plans):
    database = tmp_path / "tuning.json"
    monkeypatch.setenv(records.ENV_DATABASE, str(database))
    limit_plans(3)
    spec = layer(width=7, cin=24, cout=2, K=16, s=4, layout="NCW")
    result = tuning.tune(spec, host_target(), rounds=1, processes=0)
    folded = kernel_geometry(Geometry.from_spec(spec))
    assert folded.out_channels == 8 and folded.stride == 1
    assert result.record.workload == records.workload_key(folded)
    assert all(c.problem is None for c in result.candidates)
    y, x, f, kernel = run_layer(spec)
    assert str(kernel.attrs["conv1d_transpose.schedule"]) == f"tuned:{result.record.digest()}"
    assert max_error(y, x, f, spec)[1]
