"""Tuning: find the fastest correct schedule of the polyphase kernel for one shape on
one target, and remember it.

Two searches, both on the kernel that the compiler would build:

- "plans": the hand schedule's own knobs (`schedule_cpu.candidate_plans`: register tile
  rows x channel vectors, loop order, phases in the tile). A few dozen builds; a minute.
- "metaschedule": TVM's MetaSchedule (`tune_tir`, evolutionary search with the xgb cost
  model) on the unscheduled kernel, `trials` measured candidates. Its JSON database
  lives beside the records file and is reused, so running again resumes the search.

Every candidate is built, run and checked against the numpy reference before it is
timed (MetaSchedule once produced a wrong kernel, max error 7.28, and reported it fast);
the finalists (the first pass's fastest, the generic schedule and the schedule of the
record being replaced) are timed again, interleaved, in several fresh processes (see
`PROCESSES`), and a record is kept only when it is correct; records.py stores it and
is what compiles read.

On a target with an `rpc:` block (`RemoteTarget`), the candidates run on that device:
built here and linked with the target's cross compiler, uploaded over TVM RPC, checked
and timed there; each final-timing process opens its own session (a fresh process on the
device), and MetaSchedule measures through TVM's RPCRunner.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from ..graph.errors import ArgumentError, BackendError
from .kernels import KERNEL_VERSION, Geometry, pack_filters, target_family
from .kernels import schedule_cpu
from .kernels import fold_filters, kernel_geometry
from .records import (Record, RecordStore, default_database, error_summary,
                      kernel_from_schedule, plan_from_dict, plan_to_dict, target_key,
                      unscheduled_kernel, workload_key)

# A tuned schedule replaces the generic one only when it is at least this much faster in
# the interleaved re-timing (below that the difference is this machine's noise).
MIN_GAIN = 1.03
# The finalists' timing runs in this many fresh processes, one after another. One kernel
# can run at two steady speeds from one process to the next: in six fresh processes,
# ncw-up2's phases-in-tile plan ran 7.8-8.0 ms in three and 10.5-11.0 ms in the other
# three, while the generic schedule ran 8.2-8.5 ms in all six (Zen 4, 2026-11-25; output,
# input and filter buffers swapped within one process changed nothing). Timed in one
# process, that plan had been shipped. A schedule now replaces the generic one only if
# it is MIN_GAIN faster in every process: with five, a plan slow in half of all processes
# slips through 1 time in 32.
PROCESSES = 5
# The first pass times every candidate in this many rounds, in turns, and ranks them by
# their median: timed once, right after its build, a candidate that met a noisy moment
# missed the final (demucs-dec1's F(2,2) 11 x 2 plan: first at 6.22 ms in one run, 7.42
# and out of the final in the next, 2026-11-27, Emerald Rapids). Each round costs about
# 0.15 s a candidate; the builds cost seconds.
FIRST_PASS_ROUNDS = 3


def _plain(obj):
    """A MetaSchedule trace's JSON (TVM containers) as plain Python lists and scalars."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "value") and not hasattr(obj, "__iter__"):
        return obj.value
    try:
        return [_plain(item) for item in obj]
    except TypeError:
        return str(obj)


# --- measuring ---------------------------------------------------------------------


@dataclasses.dataclass
class Candidate:
    name: str
    schedule: dict
    runner: object = None  # (function, args) once built
    error: float | None = None
    ms: float | None = None
    times: list = dataclasses.field(default_factory=list)
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class RemoteTarget:
    """Where a target's kernels run when tuning over TVM RPC: the target's name, its
    targets.yaml `rpc` block and the cross compiler that links its libraries."""

    name: str
    rpc: dict
    cross_compiler: str | None = None

    @classmethod
    def from_entry(cls, entry) -> "RemoteTarget":
        return cls(entry.name, dict(entry.rpc), entry.cross_compiler if entry.is_cross else None)


class _Remote:
    """One RPC session to the device of a RemoteTarget, opened when first needed and
    closed (`close`) while something else needs the device: a TVM RPC server serves one
    session at a time, so the timing processes and MetaSchedule's runner could not
    connect while this one is held."""

    def __init__(self, remote: RemoteTarget):
        from .targets import rpc_address, rpc_endpoint

        self.remote = remote
        self.endpoint = rpc_endpoint(remote.rpc)  # BackendError if an emulated one is down
        self.address = rpc_address(self.endpoint)
        self.emulated = "emulated" in self.endpoint
        self.session = None
        self.uploads = 0
        self._dir = tempfile.TemporaryDirectory(prefix="conv1d-transpose-tune-")

    @property
    def device(self):
        if self.session is None:
            from .remote import connect

            self.session, self.address = connect(self.endpoint,
                                                 what=f"target {self.remote.name!r}")
        return self.session.cpu(0)

    def load(self, executable):
        """The remote module of a compiled kernel: linked here, uploaded, loaded there.
        Every upload gets a new name: the server must never overwrite a library it has
        loaded (runtime/rpc_backend.py, _Connection)."""
        device = self.device  # connects
        self.uploads += 1
        name = f"conv1d-transpose-tune-{os.getpid()}-{self.uploads}.so"
        path = os.path.join(self._dir.name, name)
        _export(executable, path, self.remote.cross_compiler)
        self.session.upload(path, name)
        return self.session.load_module(name), device

    def close(self) -> None:
        import gc

        self.session = None
        gc.collect()  # the session's socket closes when its last reference goes


class _Bench:
    """Builds candidates for one shape, checks them against the reference, times them:
    on this machine's CPU, or on a remote device (`remote`, a RemoteTarget)."""

    def __init__(self, spec, target, remote: RemoteTarget | None = None):
        from ..graph.reference import max_error

        # The kernel that computes the layer: its folded form where it has one
        # (kernels/folding.py), with the same input and output.
        self.geometry = kernel_geometry(Geometry.from_spec(spec))
        self.spec, self.target = spec, target
        self.remote = _Remote(remote) if remote is not None else None
        self._built: list[Candidate] = []  # those holding a build (`runner`)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(spec.input_shape).astype(spec.dtype)
        scale = 1.0 / np.sqrt(max(spec.in_channels * spec.kernel_width, 1))
        self.filters = (rng.standard_normal(spec.filters_shape) * scale).astype(spec.dtype)
        self._max_error = max_error

    def build(self, candidate: Candidate) -> bool:
        """Build, run once and verify; False (with `problem`) for a wrong or failed one."""
        import tvm

        if self.remote is not None:
            self.remote.device  # connect first: an unreachable device is a BackendError
        try:
            func, layout = kernel_from_schedule(self.geometry, self.target, candidate.schedule)
            executable = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol",
                                                                          "main")}),
                                     target=self.target)
        except Exception as error:
            candidate.problem = f"does not build: {error_summary(error)}"
            return False
        packed = pack_filters(fold_filters(self.filters, self.geometry), layout)
        try:
            if self.remote is None:
                lib, device = executable.jit(), tvm.cpu(0)
            else:
                lib, device = self.remote.load(executable)
            args = [tvm.runtime.tensor(self.x, device),
                    tvm.runtime.tensor(packed, device),
                    tvm.runtime.empty(self.spec.output_shape, self.spec.dtype, device)]
            lib["main"](*args)
            output = args[2].numpy()
        except Exception as error:
            if self.remote is None:
                raise
            candidate.problem = f"failed on the device: {error_summary(error)}"
        if candidate.problem:
            # Refused; it may have ended the device's session process, so the next one
            # connects afresh (the builds made on this session go with it). Closed here,
            # not in the except block, whose traceback still refers to the session.
            self.release(self._built)
            return False
        error, ok = self._max_error(output, self.x, self.filters, self.spec)
        candidate.error = float(error)
        if not ok:
            candidate.problem = f"wrong result (max abs error {error:.3g})"
            return False
        candidate.runner = (lib, args, device)
        self._built.append(candidate)
        return True

    def time(self, candidate: Candidate, repeat: int = 5) -> float:
        lib, args, device = candidate.runner
        evaluator = lib.time_evaluator("main", device, number=1, repeat=repeat,
                                       min_repeat_ms=40)
        results = list(evaluator(*args).results)
        candidate.times.extend(results)
        candidate.ms = 1e3 * statistics.median(candidate.times)
        return candidate.ms

    def release(self, candidates) -> None:
        """Drop the candidates' builds; over RPC, also hand the device back."""
        for candidate in list(candidates):
            candidate.runner = None
        self._built = [c for c in self._built if c.runner is not None]
        if self.remote is not None:
            self.remote.close()


@dataclasses.dataclass
class TuneResult:
    record: Record
    candidates: list[Candidate]
    generic_ms: float
    best_ms: float
    refused: list[Candidate]

    @property
    def speedup(self) -> float:
        return self.generic_ms / self.best_ms


def tune(spec, target, *, trials: int = 0, database: str | None = None, resume: bool = True,
         progress=None, seed: int = 0, rounds: int = 5, threads: int | None = None,
         processes: int = PROCESSES, remote: RemoteTarget | None = None) -> TuneResult:
    """Tune the kernel of `spec` for `target` (a CPU `tvm.target.Target`) and store the
    record in `database` (default `default_database()`).

    Args:
      trials: MetaSchedule trials (0: only the plan search).
      resume: with an existing MetaSchedule database for this shape and target, continue
        from it (False: start a fresh one).
      progress: callable(description: str, done: int, total: int), or None.
      rounds: interleaved timing rounds of the finalists (in each process).
      threads: CPU threads to time with (default: the runtime's, one per physical core).
      processes: fresh processes that time the finalists (0: this process only, which
        can be fooled by a kernel whose speed changes from process to process). Over
        RPC, each one opens its own session, which the device serves in a fresh process.
      remote: run the candidates on this device over TVM RPC (built here, linked with its
        cross compiler, uploaded; MetaSchedule uses TVM's RPCRunner) instead of on this
        machine's CPU.
    Raises:
      ArgumentError: a target that is not a CPU, or trials < 0.
      BackendError: the device does not answer, or the generic schedule fails there.
    """
    if target_family(target) != "cpu":
        raise ArgumentError(f"target={target.kind.name!r}: tuning runs CPU (llvm) kernels, "
                            f"on this machine or on a device over RPC")
    if trials < 0:
        raise ArgumentError(f"trials={trials} must be >= 0")
    if processes < 0:
        raise ArgumentError(f"processes={processes} must be >= 0")
    database = os.path.abspath(database or default_database())
    report = progress or (lambda description, done, total: None)
    # The thread count the runtime will use (one per physical core): without it TVM's
    # pool starts half the logical CPUs, and the plans would be timed on one core.
    from .machine import configure_threads
    configure_threads(threads)
    bench = _Bench(spec, target, remote)
    geometry = bench.geometry
    cpu = schedule_cpu.describe_target(target)
    plans = schedule_cpu.candidate_plans(geometry, cpu)
    candidates = [Candidate("generic", {"kind": "generic"})]
    candidates += [Candidate(f"plan {i}", {"kind": "plan", "plan": plan_to_dict(p)})
                   for i, p in enumerate(plans[1:], 1)]
    refused = []
    for done, candidate in enumerate(candidates):
        report(f"plans: {candidate.name}", done, len(candidates))
        if bench.build(candidate):
            bench.time(candidate, repeat=3)
        else:
            refused.append(candidate)
    report("plans", len(candidates), len(candidates))
    # (Over RPC, a candidate the device refused took the builds made before it with its
    # session; those keep the one timing they had.)
    built = [c for c in candidates if c.problem is None and c.runner is not None]
    for index in range(1, FIRST_PASS_ROUNDS):
        report("plans: timed again, in turns", index, FIRST_PASS_ROUNDS)
        for candidate in built:
            bench.time(candidate, repeat=3)
    generic = candidates[0]
    if generic.problem:
        raise BackendError(f"the generic schedule of {workload_key(geometry)} is wrong or does "
                           f"not build here: {generic.problem}")
    good = [c for c in candidates if c.problem is None]
    if trials:
        if bench.remote is not None:
            bench.release(candidates)  # MetaSchedule's runner needs the device
        good += _metaschedule(bench, geometry, target, plans[0].tiling.out_tile, trials,
                              database, resume, seed, report, refused)
    # The finalists, timed again in turns so that a noisy moment hits all of them.
    finalists = _finalists(good, generic,
                           RecordStore(database).get(workload_key(geometry), target_key(target)))
    for candidate in finalists:
        candidate.times.clear()
    if processes:
        # Free this process's builds (and, over RPC, the device) before the others run.
        bench.release(candidates + good)
        best = _final_timing_in_processes(spec, target, finalists, generic, rounds, threads,
                                          processes, report, remote)
    else:
        for candidate in finalists:  # (a device's are released while MetaSchedule runs)
            if candidate.runner is None and not bench.build(candidate):
                raise BackendError(f"the finalist {candidate.name} failed when built again: "
                                   f"{candidate.problem}")
        for index in range(rounds):
            report("final timing", index, rounds)
            for candidate in finalists:
                bench.time(candidate, repeat=3)
        # This process as the only one: the same rule as across processes.
        best = _pick(finalists, generic, [[list(c.times) for c in finalists]])
    record = Record(
        workload=workload_key(geometry), target=target_key(target),
        kernel_version=KERNEL_VERSION, schedule=best.schedule,
        measured={"ms": round(best.ms, 4), "generic_ms": round(generic.ms, 4),
                  "gflops": round(geometry.flops / best.ms / 1e6, 1),
                  "max_abs_error": best.error, "candidates": len(candidates),
                  "metaschedule_trials": trials, "chosen": best.name,
                  "processes": processes,
                  "date": datetime.date.today().isoformat(),
                  "machine": _machine(bench.remote)})
    store = RecordStore(database)
    store.put(record)
    store.save()
    bench.release(candidates + good)
    return TuneResult(record, good, generic.ms, best.ms, refused)


def _machine(remote: _Remote | None) -> str:
    """Where the record's times were measured, for the record."""
    if remote is None:
        return f"{platform.machine()} {os.cpu_count()} cpus"
    emulated = " (emulated: times are qemu's, not a board's)" if remote.emulated else ""
    return f"{remote.remote.name} over RPC at {remote.address}{emulated}"


def _finalists(good: list, generic, previous: Record | None, fastest: int = 4) -> list:
    """The candidates of the final timing: the first pass's `fastest`, the generic
    schedule, and the schedule of `previous`, the record this run replaces. The first
    pass times each candidate once, in one process; a noisy moment there must not retire
    a schedule that won a full final before."""
    schedule = previous.schedule if previous is not None else None
    if schedule and schedule.get("kind") == "plan":
        # (A plan recorded before a CpuPlan field existed lacks it: compare in full.)
        schedule = {"kind": "plan", "plan": plan_to_dict(plan_from_dict(schedule["plan"]))}
    incumbent = next((c for c in good if schedule is not None and c.schedule == schedule),
                     None)
    finalists = sorted(good, key=lambda c: c.ms)[:fastest]
    for must in (generic, incumbent):
        if must is not None and not any(c is must for c in finalists):
            finalists.append(must)
    return finalists


def _final_timing_in_processes(spec, target, finalists, generic, rounds, threads, processes,
                               report, remote=None):
    """The winner of `finalists` timed in `processes` fresh processes, one at a time: the
    candidate whose worst ratio to the generic schedule (in one process) is lowest, if
    that ratio is at least MIN_GAIN better, else `generic`. Sets each finalist's `ms`
    (median over processes of its per-process medians) and `times`."""
    request = json.dumps({"spec": spec.to_json(), "target": str(target),  # the target's JSON
                          "schedules": [c.schedule for c in finalists], "rounds": rounds,
                          "threads": threads,
                          "remote": dataclasses.asdict(remote) if remote else None})
    per_process = []
    for index in range(processes):
        report(f"final timing (process {index + 1} of {processes})", index, processes)
        # A fresh interpreter (not multiprocessing's spawn, which re-runs the caller's
        # __main__ module): no TVM state, no thread pool, its own memory layout.
        proc = subprocess.run([sys.executable, "-c", _WORKER], input=request,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise BackendError(f"the timing process failed (exit {proc.returncode}): "
                               f"{lines[-1] if lines else 'no message'}")
        per_process.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report("final timing", processes, processes)
    return _pick(finalists, generic, per_process)


def _pick(finalists, generic, per_process: list[list[list[float]]]):
    """The finalist with the lowest worst-process ratio to `generic` when that ratio is
    at least MIN_GAIN better, else `generic`. `per_process[p][i]`: the times of
    finalist i in process p. Sets each finalist's `ms` (the median over processes of
    its per-process medians) and `times`."""
    generic_index = finalists.index(generic)
    worst = []
    for index, candidate in enumerate(finalists):
        medians = [statistics.median(times[index]) * 1e3 for times in per_process]
        candidate.times = [t for times in per_process for t in times[index]]
        candidate.ms = statistics.median(medians)
        worst.append(max(statistics.median(times[index]) / statistics.median(
            times[generic_index]) for times in per_process))
    best_index = min(range(len(finalists)), key=worst.__getitem__)
    if worst[best_index] * MIN_GAIN > 1.0:
        return generic
    return finalists[best_index]


_WORKER = "from conv1d_transpose.compile.tuning import _timing_worker; _timing_worker()"


def _timing_worker() -> None:
    """(A fresh process's main.) The request as JSON on stdin; the times of each
    schedule (`_time_schedules`) as one JSON line on stdout."""
    request = json.loads(sys.stdin.read())
    remote = RemoteTarget(**request["remote"]) if request.get("remote") else None
    times = _time_schedules(request["spec"], request["target"], request["schedules"],
                            request["rounds"], request["threads"], remote)
    print(json.dumps(times))


def _time_schedules(spec_json: str, target_json: str, schedules: list, rounds: int,
                    threads, remote: RemoteTarget | None = None) -> list[list[float]]:
    """Seconds per run of each schedule, `rounds` interleaved rounds; each is built and
    checked against the reference again first."""
    import tvm

    from ..graph.spec import Conv1DTransposeSpec
    from .machine import configure_threads

    configure_threads(threads)
    spec = Conv1DTransposeSpec(**json.loads(spec_json))
    target = tvm.target.Target(json.loads(target_json))
    bench = _Bench(spec, target, remote)
    candidates = [Candidate(f"schedule {i}", schedule) for i, schedule in enumerate(schedules)]
    for candidate in candidates:
        if not bench.build(candidate):
            raise BackendError(f"a finalist failed in the timing process: {candidate.problem}")
    for _ in range(rounds):
        for candidate in candidates:
            bench.time(candidate, repeat=3)
    times = [candidate.times for candidate in candidates]
    bench.release(candidates)
    return times


def _metaschedule(bench, geometry, target, out_tile, trials, database, resume, seed, report,
                  refused) -> list[Candidate]:
    """MetaSchedule on the unscheduled kernel; its best few records, verified and timed."""
    import shutil

    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    work_dir = os.path.join(os.path.dirname(database), "metaschedule",
                            hashlib.sha256(f"{workload_key(geometry)} {target_key(target)} "
                                           f"{KERNEL_VERSION} {out_tile}".encode())
                            .hexdigest()[:16])
    if not resume and os.path.isdir(work_dir):
        shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    mod, _ = unscheduled_kernel(geometry, out_tile)
    # MetaSchedule needs the core count to size its parallel loops.
    ms_target = target
    if not target.attrs.get("num-cores"):
        config = dict(target.export())
        config["num-cores"] = schedule_cpu.describe_target(target).cores
        ms_target = tvm.target.Target(config)
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.setLevel(logging.WARNING)
    # MetaSchedule's logging setup (tvm/s_tir/meta_schedule/logging.py, create_loggers)
    # lists the handlers already on its logger by name and dictConfig-s them again: an
    # unnamed one (pytest's LogCaptureHandler got there after a first run in the same
    # process) fails it with "'NoneType' object has no attribute 'format'", a foreign
    # named one with an unknown handler. Keep only the ones it made itself.
    for handler in list(ms_logger.handlers):
        if not (handler.get_name() or "").startswith(ms_logger.name + "."):
            ms_logger.removeHandler(handler)
    db = ms.database.JSONDatabase(work_dir=work_dir)
    counter = {"done": 0, "failed": 0, "error": None}

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
                  runner_results):
            counter["done"] += len(runner_results)
            for built, ran in zip(builder_results, runner_results):
                error = built.error_msg or ran.error_msg
                if error:
                    counter["failed"] += 1
                    counter["error"] = counter["error"] or _last_error_line(error)
            report("metaschedule", counter["done"], trials)

    report("metaschedule", 0, trials)
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [Progress()]
    # Builds of unrolled candidates take tens of seconds on 2 busy cores: the default 30 s
    # timeout turned half of them into "build errors" here.
    if bench.remote is None:
        builder = ms.builder.LocalBuilder(timeout_sec=300)
        runner = ms.runner.LocalRunner(timeout_sec=120)
    else:
        builder, runner = _rpc_builder_runner(bench.remote)
    try:
        ms.tune_tir(mod, ms_target, work_dir, max_trials_global=trials,
                    num_trials_per_iter=min(64, trials), database=db, seed=seed,
                    builder=builder, runner=runner, measure_callbacks=callbacks)
    finally:
        if bench.remote is not None:
            # The runner's worker process keeps its last RPC session open until it exits;
            # the device serves one session at a time.
            runner.pool.shutdown()
    if counter["failed"]:
        # MetaSchedule only logs its failures: say how many, and the first reason.
        refused.append(Candidate("metaschedule", {"kind": "metaschedule"},
                                 problem=f"{counter['failed']} of {counter['done']} trials "
                                         f"failed to build or run: {counter['error']}"))
    workload = db.commit_workload(mod)
    found = []
    for index, record in enumerate(db.get_top_k(workload, 3)):
        schedule = {"kind": "metaschedule", "out_tile": out_tile,
                    "trace": _plain(record.trace.as_json())}
        candidate = Candidate(f"metaschedule {index}", schedule)
        if bench.build(candidate):
            bench.time(candidate, repeat=3)
            found.append(candidate)
        else:
            refused.append(candidate)
    return found


def _rpc_builder_runner(remote: _Remote):
    """MetaSchedule's builder and TVM's RPCRunner for a device over RPC. The builder
    links each candidate with the target's cross compiler (MetaSchedule's default export
    is a tar of object files that the device would have to link itself); the runner opens
    each session through `remote.connect`, so a direct server ({host,
    port}: RPCRunner itself knows only trackers) and a tracker key both work, within the
    target's timeout."""
    import functools

    from tvm.s_tir import meta_schedule as ms

    endpoint = remote.endpoint
    if "tracker" in endpoint:
        host, _, port = endpoint["tracker"].rpartition(":")
        key = endpoint["key"]
    else:  # not used to connect (f_create_session does), but RPCConfig requires them
        host, port, key = endpoint["host"], endpoint["port"], "direct"
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                                 # a qemu device runs a candidate for seconds
                                 session_timeout_sec=600)
    builder = ms.builder.LocalBuilder(
        timeout_sec=300, f_export=functools.partial(_export_for, remote.remote.cross_compiler))
    runner = ms.runner.RPCRunner(
        rpc_config=config, f_create_session=functools.partial(_session_for, endpoint,
                                                              remote.remote.name),
        f_alloc_argument=_alloc_arguments)
    return builder, runner


def _alloc_arguments(session, device, args_info, alloc_repeat):
    """(MetaSchedule runner worker) the kernel's arguments on the device, random data
    made here and copied there: MetaSchedule's default asks the device for
    `tvm.contrib.random.random_fill_for_measure`, which a TVM runtime built without
    USE_RANDOM (the device image's) lacks."""
    import tvm

    rng = np.random.default_rng(0)
    repeated = []
    for _ in range(alloc_repeat):
        arguments = []
        for kind, dtype, shape in args_info:
            if kind != "TENSOR":
                raise NotImplementedError(f"argument kind {kind!r}")
            data = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
            arguments.append(tvm.runtime.tensor(data, device))
        repeated.append(arguments)
    return repeated


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:200]


def _export_for(cross_compiler: str | None, module) -> str:
    """(MetaSchedule builder worker) a candidate as a shared library for the device."""
    path = os.path.join(tempfile.mkdtemp(prefix="conv1d-transpose-ms-"),
                        f"candidate-{os.getpid()}-{os.urandom(4).hex()}.so")
    _export(module, path, cross_compiler)
    return path


def _export(module, path: str, cross_compiler: str | None) -> None:
    """A built kernel as a shared library, linked by `cross_compiler` when given."""
    from tvm.support import cc

    if cross_compiler:
        module.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    else:
        module.export_library(path)


def _session_for(endpoint: dict, name: str, _rpc_config):
    """(MetaSchedule runner worker) a new RPC session to the device."""
    from .remote import connect

    return connect(endpoint, what=f"target {name!r}")[0]
