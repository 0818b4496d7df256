"""Software prefetch of the filters' next reduction block, for blocked CPU plans.

A blocked plan (a filter panel larger than L2, demucs-dec1's 1 MB per channel block and
phase) runs the reduction in blocks of `in_tile` input channels; every tile of rows reads
the block from L1/L2, but the first tile of each block waits on L3 or memory for all of
it. Here, every tile's pass over a tap also prefetches its share of the same tap's next
block (a short loop of `llvm.prefetch` before the pass), so the block is in L2 before the
first tile needs it. The same holds for a blocked Winograd plan, whose "taps" are its
products (schedule_cpu_winograd.py).

The prefetches sit outside the innermost reduction loop on purpose: inside it, LLVM
keeps the register tile's stores in the loop (it cannot tell the prefetch's pointer from
the accumulators'), and the kernel ran at half speed.

TVM 0.27 has no Python statement mutator, so `_replace` rebuilds the path from the
function's body to the loop by hand (For, SeqStmt, SBlockRealize, SBlock).
"""
from __future__ import annotations

from .layout import stored_slot

CACHE_LINE = 64


def insert(func, sch, entries, rows="vq", tap="vj"):
    """`func` with prefetches before each entry's reduction loop.

    entries: (loop, layout, phases, phases_in_tile, passes) per accumulation block:
    `loop` the loop over the input channels of one reduction block (a schedule handle in
    `sch`); phases the group's phases and phases_in_tile whether one tile spans them all;
    passes the tiles of rows that each read one reduction block (they share its
    prefetch). rows, tap: the accumulation block's variables for the output row and the
    filter slot (the direct form's row and tap; the Winograd form's pair and product).
    """
    for loop, layout, phases, phases_in_tile, passes in entries:
        target = sch.get(loop)
        prefetch = _prefetch_loop(target, _filters_buffer(func), layout, phases,
                                  phases_in_tile, passes, rows, tap)
        func = func.with_body(_replace(func.body, target, prefetch))
    return func


def _prefetch_loop(target, filters, layout, phases, phases_in_tile, passes, rows_var,
                   tap_var):
    """`for l in range(per_pass): prefetch(line l of this pass's share)`, then `target`.

    A tile's filters for one input channel and tap are `out_tile` values of its phase, or
    of each of the group's phases where the tile spans them; the lines follow the
    packing the plan rule gives each (by phase, and interleaved, KernelLayout)."""
    from tvm import sym, tirx

    element = layout.geometry.accumulate_bytes
    in_tile, out_tile = layout.tiling.in_tile, layout.tiling.out_tile
    span = out_tile * (len(phases) if phases_in_tile else 1)
    lines_per_channel = max(1, -(-span * element // CACHE_LINE))
    lanes_per_line = max(1, CACHE_LINE // element)
    lines = in_tile * lines_per_channel
    per_pass = -(-lines // max(1, passes))

    realize = _find_realize(target)
    analyzer = sym.Analyzer()
    for var in _loop_vars(target):
        analyzer.bind(var, tirx.const(0, "int32"))
    binding = {iter_var.var.name: analyzer.simplify(value)
               for iter_var, value in zip(realize.block.iter_vars, realize.iter_values)}
    rows = layout.tiling.rows
    tile = analyzer.simplify(binding[rows_var] // rows % max(1, passes))
    channels = layout.in_channels
    next_block = analyzer.simplify((binding["vci"] + in_tile) % channels)
    line = tirx.Var("line", "int32")
    index = (tile * per_pass + line) % lines
    channel = next_block + index // lines_per_channel
    offset = index % lines_per_channel * lanes_per_line  # within the channel's span
    lane = offset % out_tile
    # (A tile spanning the phases has vr among its own loops, bound to 0 above.)
    phase = binding["vr"] + phases[0] + (offset // out_tile if phases_in_tile else 0)
    block, tap = binding["vcoo"], analyzer.simplify(stored_slot(layout, binding[tap_var]))
    indices = ([block, phase, tap, channel, lane] if layout.phase_major
               else [block, tap, channel, phase, lane])
    call = tirx.call_llvm_intrin(
        "void", "llvm.prefetch.p0",
        tirx.address_of(tirx.BufferLoad(filters, indices)),
        tirx.const(0, "int32"),  # a read
        tirx.const(2, "int32"),  # locality 2: into L2 (prefetcht1)
        tirx.const(1, "int32"))  # the data cache
    loop = tirx.For(line, tirx.const(0, "int32"), tirx.const(per_pass, "int32"),
                    tirx.ForKind.SERIAL, tirx.Evaluate(call))
    return tirx.SeqStmt([loop, target])


def _filters_buffer(func):
    # TVM 0.27: a buffer parameter is a Var of buffer type, loadable as the buffer.
    for param in func.params:
        if param.name == "filters":
            return param
    raise ValueError("the kernel has no `filters` parameter")


def _find_realize(stmt):
    """The one SBlockRealize below `stmt` (the register tile's loops hold one block)."""
    from tvm import s_tir, tirx

    while True:
        if isinstance(stmt, s_tir.SBlockRealize):
            return stmt
        if isinstance(stmt, tirx.For):
            stmt = stmt.body
        else:
            raise ValueError(f"unexpected {type(stmt).__name__} in the register tile")


def _loop_vars(stmt):
    from tvm import tirx

    out = []
    while isinstance(stmt, tirx.For):
        out.append(stmt.loop_var)
        stmt = stmt.body
    return out


def _replace(stmt, target, replacement):
    """`stmt` with the statement `target` (by identity) replaced."""
    from tvm import s_tir, tirx

    if stmt.same_as(target):
        return replacement
    if isinstance(stmt, tirx.For):
        body = _replace(stmt.body, target, replacement)
        if body.same_as(stmt.body):
            return stmt
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body,
                        stmt.thread_binding, stmt.annotations, stmt.step)
    if isinstance(stmt, tirx.SeqStmt):
        items = [_replace(item, target, replacement) for item in stmt.seq]
        if all(new.same_as(old) for new, old in zip(items, stmt.seq)):
            return stmt
        return tirx.SeqStmt(items)
    if isinstance(stmt, s_tir.SBlockRealize):
        block = _replace(stmt.block, target, replacement)
        if block.same_as(stmt.block):
            return stmt
        return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, block)
    if isinstance(stmt, s_tir.SBlock):
        body = _replace(stmt.body, target, replacement)
        if body.same_as(stmt.body):
            return stmt
        return s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, body,
                            stmt.init, stmt.alloc_buffers, stmt.match_buffers,
                            stmt.annotations)
    return stmt
