"""A symbolic-width kernel with a loop nest per plan, the width choosing at run time
(compile/kernels/width_variants.py): which nests a layer gets, and that each computes
the reference on its side of its condition."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from conv1d_transpose.compile.kernels import (fold_filters, kernel_geometry, pack_filters,
                                              schedule_cpu, width_variants)
from conv1d_transpose.compile.kernels import source_direct, symbolic_width
from conv1d_transpose.compile.kernels.layout import plan_layout

from test_kernels import aarch64_tools  # noqa: F401  (the fixture)
from test_symbolic_width import _check, _layer, host_target


def _cpu():
    return schedule_cpu.describe_target(host_target())


def _plan_at(geometry, offset, width):
    layer = symbolic_width.layer_at(geometry, offset)
    return schedule_cpu.symbolic_plan(kernel_geometry(layer(width)), _cpu(),
                                      symbolic_width.fit(layer))[0]


def _run_at(geometry, offset, widths, seed=0):
    """Build the layer's kernel as the lowering does and check it at `widths`; returns
    its variants and the kernel's TVMScript."""
    target = host_target()
    layer = symbolic_width.layer_at(geometry, offset)
    func, layout, chosen = width_variants.build(geometry, target, symbolic_width.fit(layer))
    library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=target)
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((geometry.kernel_width, geometry.out_channels,
                             geometry.in_channels)).astype(np.float32)
    packed = tvm.runtime.tensor(pack_filters(
        np.ascontiguousarray(fold_filters(f, kernel_geometry(geometry))), layout))
    for w in widths:
        at = layer(w)
        x = rng.standard_normal(at.input_shape).astype(np.float32)
        out = tvm.runtime.empty(at.output_shape, "float32", tvm.cpu())
        library["main"](tvm.runtime.tensor(x), packed, out)
        _check(out.numpy(), x, f, at)
    return chosen, func.script()


@pytest.mark.parametrize("data_format", ["NCW", "NWC"])
def test_narrow_widths_take_the_plan_the_static_kernel_takes_there(data_format):
    """A 16-tap stride-8 layer runs "filters" order when narrow, "rows" at the reference
    width: the kernel holds both, switching where the static plan does."""
    geometry, offset = _layer(128, 64, 16, 8, 1, 4, 4, data_format)
    chosen, script = _run_at(geometry, offset, (1, 2, 40, 82, 83, 84, 85, 200))
    narrow = [v for v in chosen if v.condition and "<=" in v.condition]
    assert len(narrow) == 1
    edge = int(re.search(r"<= (\d+)", narrow[0].condition).group(1))
    reference = chosen[-1].plan
    assert chosen[-1].condition is None
    assert narrow[0].plan.order != reference.order
    assert _plan_at(geometry, offset, edge).order == narrow[0].plan.order
    assert all(_plan_at(geometry, offset, w).order == reference.order
               for w in range(edge + 1, symbolic_width.REFERENCE_WIDTH + 1))
    assert script.count('T.sblock("variant') == len(chosen)


def test_ncw_output_rows_4_kib_apart_go_through_an_nwc_copy():
    """NCW, direct form: a width whose output rows are a multiple of 4 KiB apart takes the
    nest that stores through an NWC copy; its neighbours store straight to the rows."""
    geometry, offset = _layer(16, 16, 4, 2, 1, 1, 1, "NCW")
    # 2W outputs of 4 bytes a row: W = 512 puts the rows 4 KiB apart.
    chosen, script = _run_at(geometry, offset, (511, 512, 513, 1024, 1536, 5))
    copy = [v for v in chosen if v.ncw_copy]
    assert len(copy) == 1 and not chosen[-1].ncw_copy
    assert "yw" in script and 'T.sblock("layout")' in script


def test_nwc_and_winograd_kernels_have_no_copy_nest():
    for layer in ((16, 16, 4, 2, 1, 1, 1, "NWC"), (64, 32, 4, 2, 1, 1, 1, "NWC")):
        geometry, _ = _layer(*layer)
        width = symbolic_width.fit(symbolic_width.layer_at(geometry, 0))
        assert not any(v.ncw_copy for v in width_variants.variants(geometry, _cpu(), width))
    geometry, offset = _layer(128, 64, 4, 2, 1, 1, 1, "NCW")
    width = symbolic_width.fit(symbolic_width.layer_at(geometry, offset))
    chosen = width_variants.variants(geometry, _cpu(), width)
    # (hifigan-up3's shape: the Winograd form, which writes its NCW copy anyway)
    assert chosen[-1].plan.winograd and not any(v.ncw_copy for v in chosen)


def test_every_nest_reads_the_same_packed_filters():
    geometry, offset = _layer(128, 64, 16, 8, 1, 4, 4, "NCW")
    width = symbolic_width.fit(symbolic_width.layer_at(geometry, offset))
    shapes = {plan_layout(kernel_geometry(geometry), v.plan.tiling, v.plan.winograd,
                          v.plan.phase_major).filters_shape
              for v in width_variants.variants(geometry, _cpu(), width)}
    assert len(shapes) == 1


def test_the_copy_is_refused_where_it_has_no_meaning():
    geometry, _ = _layer(16, 16, 4, 2, 1, 1, 1, "NWC")
    layout = plan_layout(kernel_geometry(geometry), schedule_cpu.plan(
        kernel_geometry(geometry), _cpu()).tiling)
    with pytest.raises(ValueError, match="ncw_copy"):
        source_direct.kernel_source(layout, ncw_copy=True)


def test_nests_with_different_signatures_are_not_merged():
    a, _ = _layer(16, 16, 4, 2, 1, 1, 1, "NCW")
    b, _ = _layer(16, 8, 4, 2, 1, 1, 1, "NCW")
    target = host_target()
    funcs = [schedule_cpu.build(kernel_geometry(g), target, width=symbolic_width.fit(
        symbolic_width.layer_at(g, 0)))[0] for g in (a, b)]
    with pytest.raises(ValueError, match="signatures"):
        width_variants.merged([("width < 9", funcs[0]), (None, funcs[1])])


@pytest.mark.parametrize("layer, widths", [
    ((16, 16, 4, 2, 1, 1, 1, "NCW"), (511, 512)),  # the NWC copy's nest at 512
    ((128, 64, 16, 8, 1, 4, 4, "NWC"), (83, 84)),  # the narrow plan's nest up to 83
], ids=str)
def test_the_kernel_and_its_nests_run_on_aarch64_under_qemu(aarch64_tools, tmp_path, layer,
                                                            widths):
    """arm64 (a cross build, run under qemu-user): one symbolic-width kernel, checked on
    both sides of its nest's condition."""
    from test_kernels import AARCH64, aarch64_program, run_under_qemu

    geometry, offset = _layer(*layer)
    at = symbolic_width.layer_at(geometry, offset)
    func, layout, chosen = width_variants.build(geometry, tvm.target.Target(AARCH64),
                                                symbolic_width.fit(at))
    assert len(chosen) == 2
    aarch64_program(func, tmp_path)
    rng = np.random.default_rng(9)
    f = rng.standard_normal((geometry.kernel_width, geometry.out_channels,
                             geometry.in_channels)).astype(np.float32)
    packed = pack_filters(np.ascontiguousarray(fold_filters(f, kernel_geometry(geometry))),
                          layout)
    for w in widths:
        layer_w = at(w)
        x = rng.standard_normal(layer_w.input_shape).astype(np.float32)
        y = run_under_qemu(tmp_path, x, packed, layer_w.output_shape, "float32")
        _check(y, x, f, layer_w)


def test_a_blocked_ncw_plan_keeps_its_direct_stores():
    """Demucs' deepest layer in NCW plans a blocked reduction, whose stores sit in its
    chunk of reduction blocks: no copy nest (TVM cannot schedule one), and the kernel is
    right at a width whose output rows are 4 KiB apart (255: 1024 + 4 wide)."""
    geometry, offset = _layer(2048, 1024, 8, 4, 1, 0, 0, "NCW")
    width = symbolic_width.fit(symbolic_width.layer_at(geometry, offset))
    chosen = width_variants.variants(geometry, _cpu(), width)
    assert chosen[-1].plan.blocked and not any(v.ncw_copy for v in chosen)
    _run_at(geometry, offset, (255, 64))


def test_a_nest_tvm_cannot_schedule_is_left_out(monkeypatch):
    """The reference plan's nest then serves every width."""
    real = schedule_cpu.build

    def failing(geometry, target, cpu_plan=None, width=None, ncw_copy=False):
        if ncw_copy:
            raise RuntimeError("ScheduleError (as TVM raises it)")
        return real(geometry, target, cpu_plan, width, ncw_copy)

    monkeypatch.setattr(schedule_cpu, "build", failing)
    geometry, offset = _layer(16, 16, 4, 2, 1, 1, 1, "NCW")
    chosen, script = _run_at(geometry, offset, (511, 512))
    assert len(chosen) == 1 and chosen[0].condition is None and "yw" not in script


def test_the_copy_nest_takes_a_symbolic_batch_too():
    import dataclasses

    geometry, offset = _layer(16, 16, 4, 2, 1, 1, 1, "NCW", batch=None)
    at = symbolic_width.layer_at(geometry, offset)
    target = host_target()
    func, layout, chosen = width_variants.build(geometry, target, symbolic_width.fit(at))
    assert chosen[0].ncw_copy
    library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                          target=target)
    rng = np.random.default_rng(10)
    f = rng.standard_normal((4, 16, 16)).astype(np.float32)
    packed = tvm.runtime.tensor(pack_filters(f, layout))
    for batch, w in ((1, 512), (3, 512), (2, 77)):
        layer = dataclasses.replace(at(w), batch=batch)
        x = rng.standard_normal(layer.input_shape).astype(np.float32)
        out = tvm.runtime.empty(layer.output_shape, "float32", tvm.cpu())
        library["main"](tvm.runtime.tensor(x), packed, out)
        _check(out.numpy(), x, f, layer)
