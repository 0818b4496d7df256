"""PLAN-JSON arguments for tools/cpu/kernel_plans.py that change how demucs-dec1's F(2,2)
kernel (tile 11 pairs x 2 vectors) prefetches its next block of filters, one per line:

    mapfile -t V < <(python tools/cpu/prefetch_trials.py KIND IN_TILE[,IN_TILE...])
    python tools/cpu/kernel_plans.py demucs-dec1 15 generic "${V[@]}"

KIND "sparse:S": the tile's burst before its channel loop prefetches only every S-th line
of its share (S = 1: the shipped kernel). KIND "inner": no burst; instead two prefetches
(the channel's two lines) inside the channel loop, one block ahead. KIND "inner-stack":
"inner" with the accumulators on the stack (stack_accumulators.py), so that LLVM keeps
them in registers. KIND "cached": no prefetch, and every panel reads block 0 of the
filters (wrong results, timed only): the form's ceiling with its filters in cache.
docs/results/cpu-history.md (demucs-dec1) quotes each (2026-11-27); with ASM_DIR=dir, kernel_plans.py also
writes each kernel's assembly.
"""
import json
import sys

PLAN = {"kw": {"winograd": True, "vectors": 2, "rows": 11}}
LINES_PER_CHANNEL = 2  # 32 float32 output channels a tile: two 64-byte lines
TILES = 3  # a chunk's tiles share each block's prefetches (33 pairs / 11)


def variant(kind: str, in_tile: int) -> dict:
    plan = dict(PLAN, tiling={"in_tile": in_tile})
    per_tile = -(-in_tile * LINES_PER_CHANNEL // TILES)
    if kind.startswith("sparse:"):
        stride = int(kind.split(":")[1])
        if stride > 1:
            plan["rewrite"] = [
                [f"for line in range({per_tile}):",
                 f"for line in range({-(-per_tile // stride)}):"],
                [f"* {per_tile} + line)", f"* {per_tile} + line * {stride})"]]
        return plan
    if kind == "inner-stack":
        return dict(variant("inner", in_tile), stack_accumulators=True)
    if kind == "inner":
        loop = (f"                        for ax3_1 in range({in_tile}):\n"
                f"                            for ax0_1 in T.unroll(11):")
        prefetch = ("                            T.call_llvm_intrin(\"void\", \"llvm.prefetch\", "
                    "T.address_of(filters[coo_r_fused // 4, coo_r_fused % 4, ax1, "
                    f"(ax3_0 * {in_tile} + ax3_1 + {in_tile}) % 2048, LANE]), 0, 2, 1)\n")
        inner = (f"                        for ax3_1 in range({in_tile}):\n"
                 + prefetch.replace("LANE", "0") + prefetch.replace("LANE", "16")
                 + "                            for ax0_1 in T.unroll(11):")
        return dict(plan, prefetch=False, rewrite=[[loop, inner]])
    if kind == "cached":
        return dict(plan, prefetch=False,
                    rewrite=[["filters[vcoo, vr, vk,", "filters[0, 0, vk,"]])
    raise SystemExit(f"unknown kind {kind!r}: sparse:S, inner, inner-stack or cached")


if __name__ == "__main__":
    kind, tiles = sys.argv[1], sys.argv[2]
    for in_tile in map(int, tiles.split(",")):
        print(json.dumps(variant(kind, in_tile)))
