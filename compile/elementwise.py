"""The elementwise ops next to our kernels, as one pass over memory each run (issue 29).

A vocoder's TVM segment carries a bias Add, an activation and a residual Add around each
convolution. TVM 0.27's "default" build pipeline compiles each as a function of its own:
one loop nest, one pass over the tensor, per op. Its CPU pipeline fuses them (FuseOps,
FuseTIR) but leaves every fused op as a block of its own writing an intermediate buffer
that the function allocates on each call: HiFi-GAN's bias Add + LeakyRelu then took 0.48
ms a call against 0.11 ms for the two unfused (2026-12-06, Zen 4).

`fuse(mod, target)` fuses, then schedules each fused function that has no schedule:
every block but the outputs is inlined into its consumer (one loop nest, no intermediate
buffer) and the outer loops run in parallel where the tensor is large. The innermost loop
keeps its plain form, which LLVM vectorizes (a fused, flattened loop would index the bias
by a division, which it cannot). Our kernels are marked opaque and scheduled
(lowering.py): FuseOps and this pass leave them alone.
"""
from __future__ import annotations

# Elements below which a fused function runs on one thread: a parallel launch costs
# ~5-15 us on this 2-vCPU VM, the time to stream ~64K floats.
PARALLEL_ELEMENTS = 1 << 16


def fuse(mod, target):
    """`mod` with its elementwise ops legalized, fused and scheduled (see the module
    docstring); functions already scheduled (our kernels) are left as they are."""
    import tvm
    from tvm import relax, tirx

    with target:
        mod = tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(),
            relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()])(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            scheduled = schedule(func)
            if scheduled is not None:
                mod[gv] = scheduled
    return mod


def schedule(func):
    """The scheduled form of one fused elementwise PrimFunc, or None where it is not one
    (a reduction, an opaque block): it then keeps TVM's default lowering."""
    import tvm

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    try:
        root = sch.get_sblock("root")
        blocks = sch.get_child_blocks(root)
        written = [sch.get(o) for o in sch.get_output_blocks(root)]
        outputs = [b for b in blocks if any(sch.get(b).same_as(w) for w in written)]
        # Spatial blocks only: a reduction's loops must not run in parallel.
        if not blocks or any(int(iv.iter_type) != 0 for b in blocks
                             for iv in sch.get(b).iter_vars):
            return None
        for block in blocks:
            if block not in outputs:
                sch.compute_inline(block)
        if len(outputs) != 1:
            return sch.mod["main"].with_attr("tirx.is_scheduled", True)
        [output] = outputs
        loops = sch.get_loops(output)
        if len(loops) >= 2:
            # A symbolic extent (a free batch) counts as large.
            total = 1
            for loop in loops:
                extent = sch.get(loop).extent
                total *= int(extent) if isinstance(extent, tvm.tirx.IntImm) else \
                    PARALLEL_ELEMENTS
            if total >= PARALLEL_ELEMENTS:
                outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
                sch.parallel(outer)
    except (RuntimeError, TypeError, ValueError):  # tvm.s_tir.ScheduleError is a RuntimeError
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
