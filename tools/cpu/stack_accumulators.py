"""A trial TIR pipeline for tools/cpu/kernel_plans.py ("stack_accumulators": true in a
PLAN-JSON): TVM's default one, except that the register tile's accumulator buffer
(`acc0_local`) stays a stack array instead of a TVM workspace.

Why: with an `llvm.prefetch` inside the channel loop, LLVM stored all 22 accumulators on
every iteration (prefetch_trials.py "inner": 13.2-14.3 ms). A prefetch may read any
memory that is not provably its own, and LLVM cannot tell a workspace (a pointer returned
by TVMBackendAllocWorkspace) from the filters it prefetches; a stack array that never
escapes it can, so the accumulators stay in registers. TVM 0.27 moves every allocation
of 1 KiB or more to a workspace; the `disable_lower_builtin` annotation on the
allocation keeps it, but FlattenBuffer and VectorizeLoop drop annotations, and 0.27 has
no Python statement mutator. So this pass re-parses the module's TVMScript just before
SplitHostDevice with the annotation added. A trial, not the product: docs/results/cpu-history.md (demucs-dec1)
quotes what it measured (2026-11-27).
"""
import re

import tvm
from tvm.tirx import compilation_pipeline

NAME = "conv1d-transpose-stack-accumulators"


@tvm.transform.module_pass(opt_level=0, name="StackAccumulators")
def _annotate(mod, _ctx):
    text, count = re.subn(r"(acc0_local = T\.alloc_local\([^\n]*?)\)\n",
                          r'\1, annotations={"disable_lower_builtin": True})\n',
                          mod.script(show_meta=True))
    assert count == 1, f"{count} accumulator allocations"
    return tvm.script.from_source(text)


def _factory():
    pipeline, host, device = compilation_pipeline.get_tir_pipeline("s_tir")
    sequential = tvm.ir.transform.Sequential

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        def with_annotation(passes, *args, **kwargs):
            names = [p.info.name for p in passes]
            if "tirx.SplitHostDevice" in names:
                at = names.index("tirx.SplitHostDevice")
                passes = list(passes[:at]) + [_annotate] + list(passes[at:])
            return sequential(passes, *args, **kwargs)
        tvm.ir.transform.Sequential = with_annotation  # the s_tir pipeline builds its list inside
        try:
            return pipeline(mod)
        finally:
            tvm.ir.transform.Sequential = sequential
    return _pipeline, host, device


compilation_pipeline.register_tir_pipeline(NAME, _factory)
