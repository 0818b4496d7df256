"""CPU schedule of the width form (source_width.py), and the rule of which layers take it.

Register tile: R output channels x V vectors of positions (AVX-512: R*V <= 24 zmm
accumulators). Loop nest: (batch, width tile, channel block) fused and parallel ->
input channel -> tap -> R (unrolled) -> V (unrolled) -> lanes (vectorized). Per input
channel and tap it broadcasts R packed filter values and loads V contiguous input
vectors: no transpose of an NCW input, and a one-channel output costs one vector of
lanes, not a whole vector of padded channels as in the channel-vectorized kernel.
"""
from __future__ import annotations

from .polyphase import Geometry
from .source_phase_width import PhaseWidthLayout, fits, phase_width_source
from .source_phase_width import SymbolicSizes as PhaseSizes
from .source_phase_width import symbolic_sizes as phase_symbolic_sizes
from .source_width import SymbolicSizes, WidthLayout, symbolic_sizes, width_source
from .tir import loops_by_variable

# Accumulator registers a tile may take (AVX-512 and aarch64 have 32 vector registers).
ACCUMULATORS = 24


def applies(geometry: Geometry, cpu, width=None) -> bool:
    """Whether a layer runs in the width form rather than the channel-vectorized kernel.

    Only stride-1 NCW float32 layers (not folded: a folded kernel's channels are phases;
    static batch) on a CPU with 16-lane float32 vectors (AVX-512); float16/float64 keep
    the channel-vectorized kernel. Which of those is `prefers_width`'s measured choice.
    width: a symbolic_width.SymbolicWidth, `geometry` at its reference width: also that
    the kernel's sizes are affine in the width (source_width.symbolic_sizes)."""
    g = geometry
    if not (g.data_format == "NCW" and g.stride == 1 and g.folded_stride == 1
            and g.dtype == "float32" and g.batch is not None and cpu.vector_bits == 512
            and g.out_width > 0):
        return False
    if not prefers_width(g.in_channels, g.out_channels, g.kernel_width):
        return False
    return width is None or symbolic_sizes(layout_for(g, cpu), width) is not None


def prefers_width(in_channels: int, out_channels: int, kernel_width: int) -> bool:
    """The measured part of the rule: fewer than 16 output channels (less than one
    channel vector), up to 64 channels, or up to 128 with K <= 3.

    Kernel ms, channel form (tuning record or generic plan) -> width form, interleaved in
    one process (tools/cpu/width_form.py), AMD EPYC Zen 4, 2 vCPUs, 2026-12-06, batch 1:
    32 -> 1 K 7 W 12800 1.64 -> 0.36, same 'valid' W 24006 2.75 -> 0.26; 64 -> 64 K 3 W
    6400 2.15 -> 1.58 (d 3: 2.29 -> 1.52); 32 -> 32 K 3 W 12800 1.20 -> 0.82; 32 -> 16 K 3
    W 24002 1.47 -> 0.84; 64 -> 64 K 7 W 6400 4.17 -> 3.85; 32 -> 32 K 11 W 12800 4.85
    -> 3.72; 1x1: 16 -> 32 W 24000 0.91 -> 0.52, 32 -> 32 1.52 -> 1.02, 64 -> 64 W 12000
    2.10 -> 1.54; with 128 channels, 128 -> 64 K 3 W 3002 2.97 -> 2.00, 64 -> 128 1x1 W
    3000 0.83 -> 0.68, 128 -> 128 1x1 1.13 -> 0.98, but 128 -> 128 K 7 W 3200 6.37 ->
    7.00; with 256: 256 -> 128 K 3 W 602 1.65 -> 1.58, 128 -> 256 1x1 W 600 0.41 -> 0.43,
    256 -> 256 1x1 0.80 -> 0.82, 256 -> 256 K 3 d 3 W 400 1.09 -> 1.69 (the channel form
    reuses each input value across a 64-channel tile; this form reads R=4 filters per
    input vector)."""
    channels = max(in_channels, out_channels)
    return out_channels < 16 or channels <= 64 or (channels <= 128 and kernel_width <= 3)


def layout_for(geometry: Geometry, cpu) -> WidthLayout:
    """R and V from the sizes: R = the output channels up to 6 (else the tile of 6, 5 or 4
    that pads the fewest channels, the larger on a tie), V = as many vectors as the
    accumulators allow, at most 8 and no more than the width needs."""
    lanes = cpu.vector_bits // 32
    budget = ACCUMULATORS if cpu.registers >= 32 else cpu.registers - 4
    cout = geometry.out_channels
    rows = cout if cout <= 6 else min((6, 5, 4), key=lambda r: (-(-cout // r) * r, -r))
    vectors = max(1, min(budget // rows, 8, -(-geometry.out_width // lanes)))
    return WidthLayout(geometry, rows, vectors, lanes)


def schedule(func, layout: WidthLayout, width: SymbolicSizes | None = None):
    """The register-tiled schedule of `width_source(layout)`'s PrimFunc; with `width`
    (source_width.symbolic_sizes), of its symbolic-width form's: each of its loop nests
    as the static one."""
    import tvm

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    if width is None:
        copies = layout.padded and layout.left < layout.padded_width and \
            layout.geometry.in_width + layout.left > max(0, layout.left)
        _schedule_nest(sch, layout, "", copies)
    else:
        _schedule_nest(sch, layout, "", width.copies())
        if width.short:
            _schedule_nest(sch, layout, "_short", False)
    return sch.mod["main"]


def _schedule_nest(sch, layout: WidthLayout, suffix: str, copies: bool):
    """Schedule the blocks named with `suffix`: copies, whether there is a "pad_copy"."""
    block, store = sch.get_sblock(f"accumulate{suffix}"), sch.get_sblock(f"store{suffix}")
    n, t, b, r, u = sch.get_loops(store)
    u_vectors, u_lanes = sch.split(u, [None, layout.lanes])
    # Width tiles outside the channel blocks: a tile's input stays in L2 while every
    # block of filters passes over it.
    outer = sch.fuse(n, t, b)
    sch.compute_at(block, outer)
    _register_tile(sch, block, store, outer, layout.lanes, ("vci", "vk"), ("vr",), 1)
    if copies:
        # Only the copy in parallel: the zero edges are (K-1)*d and less than a tile wide,
        # and each parallel launch can cost a time slice on a busy machine.
        pn, pci, _ = sch.get_loops(sch.get_sblock(f"pad_copy{suffix}"))
        sch.parallel(sch.fuse(pn, pci))


def build(geometry: Geometry, target, layout: WidthLayout | None = None, width=None):
    """(scheduled PrimFunc, WidthLayout) for a CPU target.

    width: a symbolic_width.SymbolicWidth: the kernel for every input width, laid out at
    `geometry`'s (the reference width); see source_width.width_source."""
    import tvm
    from tvm.script import tirx as T  # noqa: F401  (used by the parsed source)

    from .schedule_cpu import describe_target

    layout = layout or layout_for(geometry, describe_target(target))
    sizes = None
    if width is not None:
        sizes = symbolic_sizes(layout, width)
        if sizes is None:
            raise ValueError(f"no symbolic-width form of the width kernel for {geometry}")
    func = tvm.script.from_source(width_source(layout, width=width))
    return schedule(func, layout, sizes), layout


def applies_phase(geometry: Geometry, cpu, symbolic: bool = False) -> bool:
    """Whether a strided layer runs in the phase width form (source_phase_width.py)
    rather than the channel-vectorized kernel (folded or not).

    Layers the form fits (stride > 1, dilation 1, K a multiple of the stride, NCW, not
    folded: pass the layer's own geometry, before kernels.kernel_geometry folds it),
    float32 with a static batch on a CPU with 16-lane float32 vectors, whose interior
    holds a tile; which of those is `prefers_phase`'s measured choice. symbolic: also
    that its sizes are affine in the width (source_phase_width.symbolic_sizes)."""
    g = geometry
    if not (fits(g) and g.dtype == "float32" and g.batch is not None
            and cpu.vector_bits == 512 and g.out_width > 0):
        return False
    if not prefers_phase(g.in_channels, g.out_channels, g.stride):
        return False
    layout = phase_layout_for(g, cpu)
    if symbolic:
        return phase_symbolic_sizes(layout) is not None
    return layout.long


def prefers_phase(in_channels: int, out_channels: int, stride: int) -> bool:
    """The measured part of the rule: up to 128 channels at strides up to 4, and one
    output channel at strides up to 16 (the register tile is R x s x V accumulators, so
    a wide stride leaves room for few channels).

    Kernel ms, the kernel the layer got before (the channel form, folded where the
    lowering folds it) -> the phase width form, interleaved in one process
    (tools/cpu/phase_width_form.py, AMD EPYC Zen 4, 2 vCPUs, 2026-12-07, batch 1;
    docs/results/phase-width-form-zen4-1207.txt): 128 -> 64 K 4 s 2 W 12800 (HiFi-GAN's
    third upsampler at 200 frames) 5.47 -> 4.19, 64 -> 32 (its fourth) 5.26 -> 2.26,
    128 -> 64 K 8 s 4 W 8000 (EnCodec's third) 7.81 -> 5.89, 128 -> 128 K 4 s 2 4.99 ->
    4.29, 256 -> 128 K 4 s 2 9.15 -> 8.40, 128 -> 64 K 6 s 3 4.53 -> 3.86, 64 -> 32 K 10
    s 5 1.09 -> 1.03, 16 -> 1 K 4 s 2 (folded) 0.63 -> 0.08, 32 -> 1 K 16 s 8 0.114 ->
    0.042, K 32 s 16 0.060 -> 0.043; but 256 -> 256 K 4 s 2 W 1600 3.34 -> 4.24, 64 -> 32
    K 16 s 8 1.08 -> 1.14, 128 -> 64 K 16 s 8 1.77 -> 2.17. 256 -> 128 and s 5 gain too
    little to take on two measurements."""
    if max(in_channels, out_channels) > 128:
        return False
    return stride <= 4 or (out_channels == 1 and stride <= 16)


def phase_layout_for(geometry: Geometry, cpu) -> PhaseWidthLayout:
    """R and V of the phase width form: R*s*V accumulators within the budget, R up to 4
    and V up to 3, no more vectors than the interior needs."""
    lanes = cpu.vector_bits // 32
    budget = ACCUMULATORS if cpu.registers >= 32 else cpu.registers - 4
    s, cout = geometry.stride, geometry.out_channels
    rows = max(1, min(cout, 4, budget // s))
    vectors = max(1, min(budget // (rows * s), 3, -(-(geometry.out_width // s) // lanes)))
    return PhaseWidthLayout(geometry, rows, vectors, lanes)


def schedule_phase(func, layout: PhaseWidthLayout, width: PhaseSizes | None = None):
    """The register-tiled schedule of `phase_width_source(layout)`'s PrimFunc: the
    interior's tile (R x s x V vectors) in registers, the edge rows' nest left serial."""
    import tvm

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    if layout.long or width is not None:
        _schedule_phase_interior(sch, layout, "")
    return sch.mod["main"]


def _schedule_phase_interior(sch, layout: PhaseWidthLayout, suffix: str):
    block, store = sch.get_sblock(f"accumulate{suffix}"), sch.get_sblock(f"store{suffix}")
    n, t, b, r, p, u = sch.get_loops(store)
    sch.split(u, [None, layout.lanes])
    # Tiles of rows in parallel, each tile's channel blocks in turn: the tile's input
    # rows stay in L1 while every block of filters passes over them.
    outer = sch.fuse(n, t)
    sch.compute_at(block, b)
    _register_tile(sch, block, store, outer, layout.lanes, ("vci", "vj"), ("vp", "vr"), 2)


def _register_tile(sch, block, store, outer, lanes: int, reduction: tuple, tile: tuple,
                   kept: int):
    """The register tile of a width form's accumulation `block` (computed at `outer`):
    the `reduction` loops, then the `tile` loops and the vectors of positions unrolled,
    the lanes vectorized; `outer` in parallel; the store's and the init's loops past
    their first `kept` unrolled too, their lanes vectorized."""
    loop = loops_by_variable(sch, block)
    a_vectors, a_lanes = sch.split(loop["vu"], [None, lanes])
    order = [loop[v] for v in (*reduction, *tile) if loop.get(v) is not None]
    order += [a_vectors, a_lanes]
    sch.reorder(*order)
    first = order[0]
    if all(loop.get(v) is None for v in reduction):
        # One input channel and one tap: a unit loop for the init to go before.
        first = sch.add_unit_loop(order[0])
    sch.set_scope(block, 0, "local")
    sch.parallel(outer)  # (before decompose_reduction, which the primitive refuses after)
    for v in tile:
        if loop.get(v) is not None:
            sch.unroll(loop[v])
    sch.unroll(a_vectors)
    sch.vectorize(a_lanes)
    # Every loop of the tile unrolled in the store and the init too: a variable index
    # into the accumulators keeps LLVM from holding them in registers.
    store_loops = sch.get_loops(store)
    for item in store_loops[kept:-1]:
        sch.unroll(item)
    sch.vectorize(store_loops[-1])
    init = sch.decompose_reduction(block, first)
    for item in sch.get_loops(init)[kept:-1]:
        sch.unroll(item)
    sch.vectorize(sch.get_loops(init)[-1])


def build_phase(geometry: Geometry, target, layout: PhaseWidthLayout | None = None,
                symbolic: bool = False):
    """(scheduled PrimFunc, PhaseWidthLayout) of the phase width form for a CPU target;
    symbolic: the kernel for every input width, laid out at `geometry`'s (see
    source_phase_width.phase_width_source)."""
    import tvm
    from tvm.script import tirx as T  # noqa: F401  (used by the parsed source)

    from .schedule_cpu import describe_target

    layout = layout or phase_layout_for(geometry, describe_target(target))
    sizes = None
    if symbolic:
        sizes = phase_symbolic_sizes(layout)
        if sizes is None:
            raise ValueError(f"no symbolic-width form of the phase width kernel for {geometry}")
    func = tvm.script.from_source(phase_width_source(layout, symbolic=symbolic))
    return schedule_phase(func, layout, sizes), layout
