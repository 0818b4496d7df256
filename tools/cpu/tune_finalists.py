"""What `tune` saw for one workload: the first pass's ranking and each finalist's median
in every fresh process of the final, which the CLI does not print.

    python tools/cpu/tune_finalists.py WORKLOAD [DATABASE]

WL=FILE for a workloads file of your own.

Runs `tuning.tune` as `conv1d-transpose tune` does (plan search, 5-process final), into
DATABASE (default: a temporary file, so the shipped records stay as they are), with the
tuner's private `_finalists` and `_pick` wrapped to print what they were given. Used for
docs/results/cpu-history.md's note on why `tune` kept demucs-dec1's generic plan (2026-11-27).
"""
import os
import sys
import statistics
import tempfile

from conv1d_transpose.compile import tuning
from conv1d_transpose.compile.targets import get_target
from conv1d_transpose.workloads import find_workload


def _describe(candidate):
    plan = candidate.schedule.get("plan") or {}
    form = "F(2,r)" if plan.get("winograd") else "direct" if plan else "generic"
    return f"{candidate.name:9s} {form:7s} {plan.get('tiling', '')}"


def _finalists(good, generic, previous, fastest=4):
    for candidate in sorted(good, key=lambda c: c.ms)[:10]:
        print(f"first pass {candidate.ms:8.3f} ms  {_describe(candidate)}", flush=True)
    chosen = _original_finalists(good, generic, previous, fastest)
    print("finalists:", ", ".join(c.name for c in chosen), flush=True)
    return chosen


def _pick(finalists, generic, per_process):
    best = _original_pick(finalists, generic, per_process)
    for index, candidate in enumerate(finalists):
        medians = [statistics.median(times[index]) * 1e3 for times in per_process]
        print(f"final, ms per process: {' '.join(f'{m:7.3f}' for m in medians)}  "
              f"{_describe(candidate)}", flush=True)
    print("picked:", best.name)
    return best


_original_finalists, _original_pick = tuning._finalists, tuning._pick
tuning._finalists, tuning._pick = _finalists, _pick

if __name__ == "__main__":
    workload = sys.argv[1]
    database = sys.argv[2] if len(sys.argv) > 2 else tempfile.mktemp(suffix=".json")
    tuning.tune(find_workload(workload, os.environ.get("WL")).spec(),
                get_target("host").tvm_target(),
                database=database)
