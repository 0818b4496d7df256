"""What the kernel-timing tools share: build a scheduled PrimFunc, check it against the
reference, and time several kernels in interleaved rounds in one process. With ASM_DIR
set, each built kernel's assembly is written there as kernel-N.s, in build order."""
import itertools
import os
import statistics

import tvm

from conv1d_transpose.compile.kernels import fold_filters, pack_filters
from conv1d_transpose.graph.reference import max_error


_BUILT = itertools.count()


def checked_kernel(func, layout, spec, x, f, target, tir_pipeline="default"):
    """(time evaluator, its arguments, max error, within tolerance) of one kernel."""
    executable = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                             target=target, tir_pipeline=tir_pipeline)
    if os.environ.get("ASM_DIR"):
        path = os.path.join(os.environ["ASM_DIR"], f"kernel-{next(_BUILT)}.s")
        with open(path, "w") as out:
            out.write(executable.mod.inspect_source("asm"))
    lib = executable.jit()
    dev = tvm.cpu(0)
    args = [tvm.runtime.tensor(x, dev), tvm.runtime.tensor(pack_filters(fold_filters(f, layout.geometry), layout), dev),
            tvm.runtime.empty(spec.output_shape, spec.dtype, dev)]
    lib["main"](*args)
    error, ok = max_error(args[2].numpy(), x, f, spec)
    evaluator = lib.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=40)
    return evaluator, args, error, ok


def compiled_alone(func, target):
    """The kernel alone in an LLVM module, as compile/build.py's `_compile_kernels_apart`
    compiles a symbolic-width kernel in a model build."""
    module = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    return tvm.tirx.build(module, target=target, pipeline="default")


def interleaved_medians(kernels, rounds):
    """Median seconds of each (evaluator, args), timed in turn for `rounds` rounds."""
    times = [[] for _ in kernels]
    for _ in range(rounds):
        for (evaluator, args), samples in zip(kernels, times):
            samples.extend(evaluator(*args).results)
    return [statistics.median(samples) for samples in times]
