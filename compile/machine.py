"""This machine: its cores and CPU model, and TVM's CPU worker pool, sized the same way
wherever TVM runs (the runtime's sessions, the tuner's timing processes, the bench).

Here, under compile/, because both the tuner (compile/tuning.py) and the runtime use it
and compile/ must not import runtime/ (DESIGN: the stage rules, tests/test_layering.py).
"""
from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name ('AMD EPYC', 'Intel(R) Xeon(R) Processor'), from /proc/cpuinfo
    where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """One worker per physical core: onnxruntime's default, so the backends compare fairly."""
    try:
        import psutil
        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def configure_threads(threads: int | None = None) -> tuple[int | None, bool, str]:
    """Size TVM's CPU worker pool; returns (workers, whether it took, a note if not).

    `threads`, else TVM_NUM_THREADS when the user set it, else `physical_cores()`.
    Without this TVM starts half the logical CPUs on x86 (it assumes hyper-threading):
    one worker on a 2-vCPU machine. The pool is process-wide, so the last session to
    ask decides, and a started pool can only shrink (`runtime.config_threadpool`).
    """
    if threads is None and os.environ.get("TVM_NUM_THREADS"):
        threads = int(os.environ["TVM_NUM_THREADS"])
    threads = threads or physical_cores()
    os.environ["TVM_NUM_THREADS"] = str(threads)  # read when the pool first starts
    # TVM pins each worker to a core and leaves the calling thread free: once the OS puts
    # the caller on a worker's core (after another library's threads ran there), both
    # halves of every parallel loop share that core and a call takes twice as long.
    # Measured on 2 vCPUs, stream-chunk with onnxruntime and numpy in the same process:
    # 0.43 ms pinned vs 0.21 ms unpinned. Read when the pool (re)starts; a user's own
    # TVM_BIND_THREADS wins.
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    try:
        import tvm
        tvm.get_global_func("runtime.config_threadpool")(1, threads)  # 1: kBig, TVM's default
        actual = int(tvm.get_global_func("runtime.NumThreads")())
    except Exception as error:  # an API change: say so, never fail a session over it
        return None, False, f"TVM threads not pinned: {error}"
    if actual != threads:
        return actual, False, (f"TVM's thread pool had started with {actual} workers; set "
                               f"TVM_NUM_THREADS={threads} before the first TVM call")
    return actual, True, ""
