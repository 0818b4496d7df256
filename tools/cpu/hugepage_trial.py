"""Does a kernel gain from its filters on 2 MiB pages? Kernel-only, interleaved in one
process: the same built kernel with the filters on the allocator's 4 KiB pages against a
copy on transparent huge pages (an anonymous private mapping with MADV_HUGEPAGE).

    python tools/cpu/hugepage_trial.py WORKLOAD ROUNDS generic|record

Used for the demucs-dec1 notes in docs/results/cpu-history.md: its 64 MB (direct) or 96 MB (F(2,2)) of filters
span 16-24 thousand 4 KiB pages per call, far past the STLB's reach.
"""
import mmap
import sys

import numpy as np
import tvm

from kernel_timing import checked_kernel, interleaved_medians
from conv1d_transpose.compile.machine import configure_threads
from conv1d_transpose.workloads import find_workload
from conv1d_transpose.compile.kernels.polyphase import Geometry
from conv1d_transpose.compile import records
from conv1d_transpose.compile.targets import get_target

HUGE_PAGE = 2 << 20


def on_huge_pages(array):
    """A copy of `array` in a 2 MiB-aligned, MADV_HUGEPAGE mapping (kept alive by the view)."""
    # MAP_PRIVATE: Python's default for -1 is a shared (shmem) mapping, which THP's
    # "madvise" mode does not cover.
    mapping = mmap.mmap(-1, array.nbytes + HUGE_PAGE,
                        flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.madvise(mmap.MADV_HUGEPAGE)
    raw = np.frombuffer(mapping, dtype=np.uint8)
    start = (-raw.ctypes.data) % HUGE_PAGE
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def anon_huge_kib():
    with open("/proc/self/smaps") as smaps:
        return sum(int(line.split()[1]) for line in smaps if line.startswith("AnonHugePages"))


def main(name, rounds, which):
    print(configure_threads(2))
    workload = find_workload(name)
    spec = workload.spec()
    x, f = workload.arrays()
    geometry = Geometry.from_spec(spec)
    target = get_target("host").tvm_target()
    schedule = (records.lookup(geometry, target).schedule if which == "record"
                else {"kind": "generic"})
    func, layout = records.kernel_from_schedule(geometry, target, schedule)
    evaluator, args, error, ok = checked_kernel(func, layout, spec, x, f, target)
    before = anon_huge_kib()
    huge = on_huge_pages(args[1].numpy())
    print(f"{which}: max error {error:.2g} (ok {ok}); filters {huge.nbytes / 1e6:.1f} MB, "
          f"{(anon_huge_kib() - before) // 1024} MiB of them on huge pages")
    huge_args = [args[0], tvm.runtime.from_dlpack(huge), args[2]]
    small, large = interleaved_medians([(evaluator, args), (evaluator, huge_args)], rounds)
    print(f"4 KiB pages {small * 1e3:.3f} ms, 2 MiB pages {large * 1e3:.3f} ms: "
          f"{small / large:.3f}x")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
