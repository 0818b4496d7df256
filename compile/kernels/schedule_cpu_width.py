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
from .source_width import WidthLayout, width_source
from .tir import loops_by_variable

# Accumulator registers a tile may take (AVX-512 and aarch64 have 32 vector registers).
ACCUMULATORS = 24


def applies(geometry: Geometry, cpu) -> bool:
    """Whether a layer runs in the width form rather than the channel-vectorized kernel.

    Only stride-1 NCW float32 layers (not folded, static batch) on a CPU with 16-lane
    vectors (AVX-512). The rest of the rule is measured (see WIDTH_RULE below)."""
    g = geometry
    if not (g.data_format == "NCW" and g.stride == 1 and g.folded_stride == 1
            and g.dtype == "float32" and g.batch is not None and cpu.vector_bits == 512
            and g.out_width > 0):
        return False
    return prefers_width(g.in_channels, g.out_channels, g.kernel_width, g.out_width)


def prefers_width(in_channels: int, out_channels: int, kernel_width: int, width: int) -> bool:
    """The measured part of the rule (pure). Filled in from the measurements."""
    return out_channels < 16 or (kernel_width == 1 and out_channels <= 256) \
        or (max(in_channels, out_channels) <= 64 and width >= 1024)


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


def schedule(func, layout: WidthLayout):
    """The register-tiled schedule of `width_source(layout)`'s PrimFunc."""
    import tvm

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    block, store = sch.get_sblock("accumulate"), sch.get_sblock("store")
    n, t, b, r, u = sch.get_loops(store)
    u_vectors, u_lanes = sch.split(u, [None, layout.lanes])
    # Width tiles outside the channel blocks: a tile's input stays in L2 while every
    # block of filters passes over it.
    outer = sch.fuse(n, t, b)
    sch.compute_at(block, outer)
    loop = loops_by_variable(sch, block)
    a_vectors, a_lanes = sch.split(loop["vu"], [None, layout.lanes])
    order = [loop.get("vci"), loop.get("vk"), loop.get("vr"), a_vectors, a_lanes]
    order = [item for item in order if item is not None]
    sch.reorder(*order)
    reduction = order[0]
    if loop.get("vci") is None and loop.get("vk") is None:
        # One input channel and one tap: a unit loop for the init to go before.
        reduction = sch.add_unit_loop(order[0])
    sch.set_scope(block, 0, "local")
    sch.parallel(outer)  # (before decompose_reduction, which the primitive refuses after)
    if loop.get("vr") is not None:
        sch.unroll(loop["vr"])
    sch.unroll(a_vectors)
    sch.vectorize(a_lanes)
    # Every loop of the tile unrolled in the store and the init too: a variable index
    # into the accumulators keeps LLVM from holding them in registers.
    store_loops = sch.get_loops(store)
    for item in store_loops[1:-1]:
        sch.unroll(item)
    sch.vectorize(store_loops[-1])
    init = sch.decompose_reduction(block, reduction)
    init_loops = sch.get_loops(init)
    for item in init_loops[1:-1]:
        sch.unroll(item)
    sch.vectorize(init_loops[-1])
    if layout.padded:
        for name in ("pad_left", "pad_copy", "pad_right"):
            try:
                pad = sch.get_sblock(name)
            except Exception:  # an empty range has no block
                continue
            pn, pci, _ = sch.get_loops(pad)
            sch.parallel(sch.fuse(pn, pci))
    return sch.mod["main"]


def build(geometry: Geometry, target, layout: WidthLayout | None = None):
    """(scheduled PrimFunc, WidthLayout) for a CPU target."""
    import tvm
    from tvm.script import tirx as T  # noqa: F401  (used by the parsed source)

    from .schedule_cpu import describe_target

    layout = layout or layout_for(geometry, describe_target(target))
    func = tvm.script.from_source(width_source(layout))
    return schedule(func, layout), layout
