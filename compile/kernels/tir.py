"""TIR helpers that the kernel's sources and schedules share.

`signature` writes the first lines of every form's TVMScript (source_direct.py,
source_winograd.py, source_width.py) and `inside` the guard of a store; the rest are schedule steps used by the CPU schedules of both forms
(schedule_cpu.py, schedule_cpu_winograd.py) and, for `loops_by_variable`, the CUDA one
(schedule_cuda.py). Nothing here imports the rest of the package.
"""
from __future__ import annotations


def inside(position: str, lowest: int, width: int, channels: int = 0, out_tile: int = 1) -> str:
    """Condition of a store: the output position is inside [0, O) (and the channel is
    real). An `if` in the block body rather than a block predicate: predicates that mix
    loop variables make the bindings non-affine for the schedule primitives."""
    terms = [] if lowest >= 0 else [f"{position} >= 0"]
    terms.append(f"{position} < {width}")
    if channels % out_tile:
        terms.append(f"vcoo * {out_tile} + vcoi < {channels}")
    return " and ".join(terms)


def signature(name: str, x_shape, filters_shape, out_shape, dtype: str, acc: str,
              variables=()) -> list[str]:
    """The first lines of a kernel's TVMScript: `def name(x, filters, out)` with static
    buffers, or, with `variables` (declarations such as `width = T.int32()`), `x` and
    `out` matched from handles whose shapes use those variables."""
    if not variables:
        return ["@T.prim_func(private=True, s_tir=True)",
                f"def {name}(x: T.Buffer({tuple(x_shape)}, \"{dtype}\"), "
                f"filters: T.Buffer({filters_shape}, \"{acc}\"), "
                f"out: T.Buffer({tuple(out_shape)}, \"{dtype}\")):",
                "    T.func_attr({\"tirx.noalias\": True})"]
    return ["@T.prim_func(private=True, s_tir=True)",
            f"def {name}(x_handle: T.handle, filters: T.Buffer({filters_shape}, "
            f"\"{acc}\"), out_handle: T.handle):",
            "    T.func_attr({\"tirx.noalias\": True})",
            *(f"    {declaration}" for declaration in variables),
            f"    x = T.match_buffer(x_handle, ({', '.join(map(str, x_shape))}), \"{dtype}\")",
            f"    out = T.match_buffer(out_handle, ({', '.join(map(str, out_shape))}), "
            f"\"{dtype}\")"]


def two_nests(condition: str, long, short) -> list[str]:
    """The body lines of a kernel of two loop nests, `long` where `condition` holds and
    `short` elsewhere, each (allocation lines, unindented loop lines) and in a block of
    its own ("long", "short"): the schedule's compute_at needs a scope of loops and
    blocks only (a "stage pipeline"), which the `if` around them is not."""
    lines = [f"    if {condition}:", "        with T.sblock(\"long\"):"]
    for name, (allocations, body) in (("long", long), ("short", short)):
        if name == "short":
            lines += ["    else:", "        with T.sblock(\"short\"):"]
        lines += ["        " + line for line in allocations]
        lines += ["            " + line for line in body]
    return lines


def loops_by_variable(sch, block) -> dict:
    """{block variable name: the loop bound to it} for the loops right above `block`.

    compute_at creates loops only for block variables whose region is wider than one,
    so a variable may have no loop of its own.
    """
    loops = sch.get_loops(block)
    body = sch.get(loops[-1]).body
    # A block with no loop of its own shares its innermost loop with its neighbours (one
    # input channel and one tap): find its own realize among them.
    statements = list(body.seq) if hasattr(body, "seq") else [body]
    target = sch.get(block)
    realize = next(s for s in statements
                   if hasattr(s, "block") and s.block.same_as(target))
    from tvm.tirx.analysis import undefined_vars

    by_var = {}
    for iter_var, value in zip(realize.block.iter_vars, realize.iter_values):
        used = undefined_vars(value)
        # The innermost loop in the binding (`outer * rows + ax0` binds to ax0).
        for loop in reversed(loops):
            if any(sch.get(loop).loop_var.same_as(var) for var in used):
                by_var[iter_var.var.name] = loop
                break
    return by_var


def vectorize_channels(sch, loop, lanes):
    """Vectorize a loop over a tile's channels as unrolled machine-width vectors."""
    extent = int(sch.get(loop).extent)
    if extent > lanes and extent % lanes == 0:
        outer, loop = sch.split(loop, [None, lanes])
        sch.unroll(outer)
    sch.vectorize(loop)


# The longest store loop `finish_tile` unrolls: a register tile's rows (up to 14) or
# vectors, not a chunk's row tiles.
UNROLLED_STORE_LOOP = 16


def finish_tile(sch, store_block, outer, block, reduction_loop, lanes):
    """The store's loops below `outer` (one tile) unrolled, its channels vectorized; the
    accumulators' init split off at `reduction_loop` and vectorized too.

    A chunk's loop over its row tiles (up to 42 of them) stays a loop: unrolled under an
    NCW store, whose lanes are scalar stores, it made 16,000 stores of straight-line code
    and a 35 s LLVM build (a 128-channel K=11 stride-1 layer, 2 s with the loop; the
    kernel's time the same, 18.0 ms either way, Zen 4, 2026-12-06; tools/cpu/build_time.py,
    tools/cpu/kernel_plans.py)."""
    store_loops = sch.get_loops(store_block)
    outer_stmt = sch.get(outer)
    below = next(i for i, item in enumerate(store_loops) if sch.get(item).same_as(outer_stmt))
    for item in store_loops[below + 1:-1]:
        extent = sch.get(item).extent
        extent = getattr(extent, "value", extent)
        if isinstance(extent, int) and extent > UNROLLED_STORE_LOOP:
            continue
        sch.unroll(item)
    vectorize_channels(sch, store_loops[-1], lanes)
    init = sch.decompose_reduction(block, reduction_loop)
    vectorize_channels(sch, sch.get_loops(init)[-1], lanes)


def parallel_transpose(sch, n, p, ci, symbolic_batch=False):
    """The NCW input copy (a transpose) in 16 x 16 tiles, read along the input rows."""
    po, pi = sch.split(p, [None, 16])
    cio, cii = sch.split(ci, [None, 16])
    sch.reorder(po, cio, cii, pi)
    sch.parallel(po if symbolic_batch else sch.fuse(n, po))
