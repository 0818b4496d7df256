"""Tuning (compile/tuning.py, `conv1d-transpose tune`) and its records (compile/records.py):
keys, records, the searches, and that compiles apply what was recorded.

Every candidate schedule is run against the numpy reference before it may be recorded
(MetaSchedule once reported a wrong kernel as a fast one); these tests
also make a wrong candidate on purpose and check that it is refused.
"""
import dataclasses
import json
import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from conv1d_transpose.cli import main
from conv1d_transpose.compile import lowering, records, tuning
from conv1d_transpose.compile.kernels import (KERNEL_VERSION, Geometry, kernel_geometry,
                                              schedule_cpu)
from conv1d_transpose.graph import ArgumentError, build_model, make_spec, max_error
from conv1d_transpose.graph.errors import BackendError
from conv1d_transpose.workloads import load_workloads
from models import plant_wrong_plans

tvm = pytest.importorskip("tvm")
from tvm.relax.frontend.onnx import from_onnx  # noqa: E402

# The shipped records are for the two CPUs this machine kind has come with (AMD Zen 4,
# Intel Emerald Rapids); their tests name each explicitly, and run a record's code only
# on its own CPU (elsewhere its instructions could fault).
SHIPPED_TARGETS = ({"kind": "llvm", "mcpu": "znver4"}, {"kind": "llvm", "mcpu": "emeraldrapids"})
SHIPPED_TARGET = SHIPPED_TARGETS[0]
# Suite layers added after the last session on that CPU, so never tuned there: they run
# the generic schedule on it (which the bench holds to the same bar), until a session on
# that CPU tunes them. The few-channel rows came on 2026-12-06, on a Zen 4.
NOT_TUNED_ON = {"emeraldrapids": {"htdemucs-istft", "vocos-istft", "demucs-dec-last"}}


def tuned_suite(cpu):
    """The suite layers whose records ship for `cpu` (a SHIPPED_TARGETS entry)."""
    return [w for w in load_workloads() if w.name not in NOT_TUNED_ON.get(cpu["mcpu"], ())]


def host_cpu() -> str:
    from tvm.target import codegen
    return str(codegen.llvm_get_system_cpu())


def target(**extra):
    """This machine's CPU: the tests below run what they build."""
    return tvm.target.Target({"kind": "llvm", "mcpu": host_cpu(), **extra})


def small_spec(layout="NWC", dtype="float32", stride=2, kernel=4, dilation=1, batch=1,
               cin=16, cout=24):
    nwc = layout == "NWC"
    width = 9
    out = width * stride
    return make_spec((batch, width, cin) if nwc else (batch, cin, width), (kernel, cout, cin),
                     (batch, out, cout) if nwc else (batch, cout, out), stride, "SAME", layout,
                     dilation, dtype)


# --- keys and records ------------------------------------------------------------------


def test_workload_key_names_every_integer_of_the_kernel():
    base = Geometry(1, 10, 8, 20, 4, 4, 2, 1, 1, "NWC", "float32")
    keys = {records.workload_key(base)}
    for field, value in [("batch", 2), ("batch", None), ("in_width", 11), ("in_channels", 9),
                         ("out_width", 21), ("out_channels", 5), ("kernel_width", 3),
                         ("stride", 3), ("dilation", 2), ("pad_begin", 0),
                         ("data_format", "NCW"), ("dtype", "float64")]:
        keys.add(records.workload_key(dataclasses.replace(base, **{field: value})))
    folded = dataclasses.replace(base, folded_stride=2, folded_width=40)
    for field, value in [("folded_stride", 4), ("folded_width", 39), ("folded_offset", 1)]:
        keys.add(records.workload_key(dataclasses.replace(folded, **{field: value})))
    keys.add(records.workload_key(folded))
    assert len(keys) == 17


def test_target_key_ignores_the_core_count_but_not_the_cpu():
    assert records.target_key(target()) == records.target_key(target(**{"num-cores": 7}))
    assert records.target_key(tvm.target.Target(SHIPPED_TARGET)) != records.target_key(
        tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    assert records.target_key(target()) != records.target_key(
        tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}))


def record(workload="w", schedule=None, version=None):
    return records.Record(workload, "llvm mcpu=znver4", version or KERNEL_VERSION,
                          schedule or {"kind": "generic"}, {"ms": 1.0})


def test_records_round_trip_through_a_readable_file(tmp_path):
    path = tmp_path / "sub" / "records.json"
    store = records.RecordStore(path)
    store.put(record("a"))
    store.put(record("b", {"kind": "plan", "plan": {"rows": 3}}))
    store.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    again = records.RecordStore(path)
    assert again.get("b", "llvm mcpu=znver4").schedule == {"kind": "plan", "plan": {"rows": 3}}
    assert again.get("a", "llvm mcpu=skylake") is None
    assert json.loads(path.read_text())["format"] == records.RECORDS_FORMAT


def test_a_record_of_another_kernel_version_is_not_used(tmp_path):
    store = records.RecordStore(tmp_path / "r.json")
    store.put(record("a", version="polyphase-0"))
    assert store.get("a", "llvm mcpu=znver4") is None


@pytest.mark.parametrize("text, words", [
    ("{not json", "cannot be read"),
    ('{"format": 99, "records": []}', "not a format-1"),
    ('{"format": 1, "records": [{"workload": "w"}]}', "record 0 must have exactly"),
])
def test_a_broken_database_is_refused_by_name(tmp_path, text, words):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ArgumentError, match=words) as error:
        records.RecordStore(path)
    assert str(path) in str(error.value)


def test_lookup_prefers_the_users_records_and_skips_a_broken_file(tmp_path):
    geometry = Geometry.from_spec(small_spec())
    key, tkey = records.workload_key(geometry), records.target_key(target())
    user, shipped, broken = tmp_path / "user.json", tmp_path / "shipped.json", tmp_path / "b.json"
    for path, chosen in ((user, "user"), (shipped, "shipped")):
        store = records.RecordStore(path)
        store.put(records.Record(key, tkey, KERNEL_VERSION, {"kind": "generic"},
                                 {"chosen": chosen}))
        store.save()
    broken.write_text("{")
    found = records.lookup(geometry, target(), [str(user), str(shipped)])
    assert found.measured["chosen"] == "user"
    with pytest.warns(UserWarning, match="cannot be read"):
        found = records.lookup(geometry, target(), [str(broken), str(shipped)])
    assert found.measured["chosen"] == "shipped"
    assert records.lookup(geometry, target(), [str(tmp_path / "missing.json")]) is None


# --- the plan search -------------------------------------------------------------------


# Four cases by default (both layouts, a dilation, float16); the other three, ~20 s each,
# in the slow run.
@pytest.mark.parametrize("case", [
    dict(layout="NWC"), pytest.param(dict(layout="NCW"), marks=pytest.mark.slow),
    dict(stride=1, kernel=3, dilation=2),
    pytest.param(dict(stride=3, kernel=6), marks=pytest.mark.slow),
    dict(layout="NCW", stride=5, kernel=10, batch=2),
    pytest.param(dict(dtype="float64"), marks=pytest.mark.slow),
    dict(dtype="float16", stride=4, kernel=8),
], ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_every_candidate_plan_computes_the_reference(case):
    spec = small_spec(**case)
    geometry = Geometry.from_spec(spec)
    bench = tuning._Bench(spec, target())
    plans = schedule_cpu.candidate_plans(geometry, schedule_cpu.describe_target(target()))
    assert len(plans) > 4
    for plan in plans:
        candidate = tuning.Candidate("plan", {"kind": "plan",
                                              "plan": records.plan_to_dict(plan)})
        assert bench.build(candidate), (plan, candidate.problem)


def test_candidate_plans_start_with_the_generic_plan_and_are_distinct():
    geometry = Geometry.from_spec(small_spec())
    cpu = schedule_cpu.describe_target(target())
    plans = schedule_cpu.candidate_plans(geometry, cpu)
    assert plans[0] == schedule_cpu.plan(geometry, cpu)
    assert len(set(map(repr, plans))) == len(plans)
    assert {p.order for p in plans} == {"rows", "filters"}


def lowered_schedule(spec, f, tvm_target):
    mod, scheduled = lowering.apply(from_onnx(build_model(spec, f, form="explicit")), tvm_target)
    assert scheduled
    kernels = [func for _, func in mod.functions_items()
               if isinstance(func, tvm.tirx.PrimFunc) and func.attrs
               and "conv1d_transpose.schedule" in func.attrs]
    assert len(kernels) == 1
    return mod, str(kernels[0].attrs["conv1d_transpose.schedule"])


def run_module(mod, tvm_target, x):
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm_target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()


def test_tune_records_a_checked_schedule_that_compiles_then_apply(tmp_path, monkeypatch):
    database = tmp_path / "tuning.json"
    monkeypatch.setenv(records.ENV_DATABASE, str(database))
    spec = small_spec()
    rng = np.random.default_rng(1)
    x = rng.standard_normal(spec.input_shape).astype("float32")
    f = rng.standard_normal(spec.filters_shape).astype("float32")
    _, before = lowered_schedule(spec, f, target())
    assert before == "generic"

    seen = []
    result = tuning.tune(spec, target(), progress=lambda d, i, n: seen.append((d, i, n)),
                         processes=2)
    assert seen and seen[-1][0] == "final timing"
    assert ("final timing (process 2 of 2)", 1, 2) in seen
    assert result.record.measured["processes"] == 2
    assert result.refused == [] and len(result.candidates) > 4
    stored = records.RecordStore(database).get(records.workload_key(Geometry.from_spec(spec)),
                                               records.target_key(target()))
    assert stored == result.record
    assert stored.measured["max_abs_error"] is not None and stored.measured["generic_ms"] > 0

    mod, after = lowered_schedule(spec, f, target())
    assert after == f"tuned:{stored.digest()}"
    error, ok = max_error(run_module(mod, target(), x), x, f, spec)
    assert ok, error


def test_a_wrong_candidate_is_refused_and_never_recorded(tmp_path, monkeypatch):
    spec = small_spec()
    plant_wrong_plans(monkeypatch)
    # (processes=0: the monkeypatch lives in this process only.)
    result = tuning.tune(spec, target(), database=str(tmp_path / "t.json"), rounds=1,
                         processes=0)
    assert result.refused and all("wrong result" in c.problem for c in result.refused)
    assert result.record.schedule == {"kind": "generic"}
    assert [c.name for c in result.candidates] == ["generic"]


def test_a_plan_must_beat_the_generic_schedule_in_every_process():
    def finalists():
        return [tuning.Candidate(name, {"kind": name}) for name in ("steady", "bimodal",
                                                                     "generic")]
    # Seconds per run in three processes: "bimodal" is fastest in two and slow in one.
    runs = {"steady": [0.95, 0.96, 0.95], "bimodal": [0.80, 1.30, 0.80],
            "generic": [1.0, 1.0, 1.0]}
    per_process = [[[runs[name][p]] * 3 for name in ("steady", "bimodal", "generic")]
                   for p in range(3)]
    candidates = finalists()
    assert tuning._pick(candidates, candidates[2], per_process).name == "steady"
    assert candidates[1].ms == pytest.approx(800.0) and len(candidates[1].times) == 9
    # Only 2% faster in the worst process: under MIN_GAIN, the generic schedule stays.
    runs["steady"] = [0.95, 0.98, 0.95]
    per_process = [[[runs[name][p]] * 3 for name in ("steady", "bimodal", "generic")]
                   for p in range(3)]
    candidates = finalists()
    assert tuning._pick(candidates, candidates[2], per_process).name == "generic"


def test_the_replaced_records_schedule_always_reaches_the_final_timing():
    names = ["generic"] + [f"plan {i}" for i in range(1, 8)]
    plans = [records.plan_to_dict(schedule_cpu.CpuPlan(schedule_cpu.Tiling(i + 1, 16, 64),
                                                       False, "rows")) for i in range(8)]
    good = [tuning.Candidate(name, {"kind": "plan", "plan": plan})
            for name, plan in zip(names, plans)]
    for index, candidate in enumerate(good):
        candidate.ms = 1.0 - 0.01 * index  # plan 7 fastest ... generic slowest
    generic = good[0]

    def final(previous):
        return [c.name for c in tuning._finalists(good, generic, previous)]

    assert final(None) == ["plan 7", "plan 6", "plan 5", "plan 4", "generic"]
    won_before = record("w", {"kind": "plan", "plan": dict(plans[1])})
    assert final(won_before) == ["plan 7", "plan 6", "plan 5", "plan 4", "generic", "plan 1"]
    # A record written before the plan had its `winograd` field is the same plan.
    older = {key: value for key, value in plans[1].items() if key != "winograd"}
    assert final(record("w", {"kind": "plan", "plan": older}))[-1] == "plan 1"
    already_in = record("w", dict(good[6].schedule))
    assert final(already_in) == final(None)


def test_a_noisy_first_timing_does_not_keep_the_fastest_plan_out_of_the_final(
        monkeypatch, tmp_path, limit_plans):
    # plan 1 is the fastest, but its first timing (right after its build) meets a noisy
    # moment at 5x; the first pass's later rounds, in turns, must still rank it first.
    limit_plans(7)
    steady = {"generic": 1.0, **{f"plan {i}": 0.9 + 0.01 * i for i in range(2, 7)},
              "plan 1": 0.5}
    timed = {}

    def scripted(self, candidate, repeat=5):
        timed[candidate.name] = timed.get(candidate.name, 0) + 1
        noisy = candidate.name == "plan 1" and timed[candidate.name] == 1
        candidate.times.extend([(5.0 if noisy else steady[candidate.name]) / 1e3] * repeat)
        candidate.ms = 1e3 * float(np.median(candidate.times))
        return candidate.ms

    finalists = []

    def final(spec, target, chosen, generic, *args, **kwargs):
        finalists.extend(c.name for c in chosen)
        return generic

    monkeypatch.setattr(tuning._Bench, "time", scripted)
    monkeypatch.setattr(tuning, "_final_timing_in_processes", final)
    tuning.tune(small_spec(), target(), database=str(tmp_path / "t.json"), processes=1)
    assert set(timed.values()) == {tuning.FIRST_PASS_ROUNDS}
    assert finalists[0] == "plan 1" and "generic" in finalists


def test_tune_refuses_a_negative_process_count(tmp_path):
    with pytest.raises(ArgumentError, match=r"processes=-1 must be >= 0"):
        tuning.tune(small_spec(), target(), database=str(tmp_path / "t.json"), processes=-1)


def test_a_failing_timing_process_is_a_clear_error(monkeypatch, tmp_path, limit_plans):
    import subprocess
    limit_plans(2)
    spec = small_spec()

    def failing(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "Traceback...\nMemoryError: boom\n")

    monkeypatch.setattr(tuning.subprocess, "run", failing)
    with pytest.raises(BackendError, match=r"timing process failed \(exit 1\): MemoryError: boom"):
        tuning.tune(spec, target(), database=str(tmp_path / "t.json"), rounds=1, processes=1)


def test_a_record_that_no_longer_applies_falls_back_to_the_generic_schedule():
    geometry = Geometry.from_spec(small_spec())
    bogus = records.Record(records.workload_key(geometry), records.target_key(target()),
                           KERNEL_VERSION,
                           {"kind": "metaschedule", "out_tile": 16,
                            "trace": [[["GetSBlock", [], ["no-such-block", "main"], ["b0"]]], []]},
                           {})
    with pytest.warns(UserWarning, match="does not apply"):
        _, _, used = records.tuned_kernel(geometry, target(), bogus)
    assert used is None


# --- MetaSchedule ----------------------------------------------------------------------


@pytest.mark.slow
def test_metaschedule_trials_are_checked_and_resume(tmp_path):
    """A few MetaSchedule trials on a tiny layer: its best traces are replayed on the
    kernel and run against the reference; a second run continues the same database.
    (Slow: MetaSchedule's builder and runner pools take minutes on 2 cores.)"""
    spec = small_spec()
    database = tmp_path / "tuning.json"
    result = tuning.tune(spec, target(), trials=4, database=str(database), rounds=1)
    tuned = [c for c in result.candidates + result.refused if c.name.startswith("metaschedule")]
    assert tuned, "MetaSchedule produced no schedule to check"
    for candidate in tuned:
        # Each trace was replayed on a fresh kernel and run against the reference.
        assert candidate.error is not None or candidate.problem
        assert candidate.schedule["trace"] and candidate.schedule["out_tile"] > 0
    assert result.record.measured["metaschedule_trials"] == 4
    (work_dir,) = (tmp_path / "metaschedule").iterdir()
    log = work_dir / "database_tuning_record.json"
    first = len(log.read_text().splitlines())
    assert first >= 1
    tuning.tune(spec, target(), trials=4, database=str(database), rounds=1, resume=True)
    assert len(log.read_text().splitlines()) > first


# --- the shipped records ---------------------------------------------------------------


def shipped():
    return list(records.RecordStore(records.SHIPPED_RECORDS).records.values())


@pytest.mark.parametrize("cpu", SHIPPED_TARGETS, ids=lambda t: t["mcpu"])
def test_shipped_records_cover_the_suite_on_this_machine_kinds_host(cpu):
    keys = {(r.workload, r.target) for r in shipped()}
    tkey = records.target_key(tvm.target.Target(cpu))
    for workload in tuned_suite(cpu):
        geometry = kernel_geometry(Geometry.from_spec(workload.spec()))
        assert (records.workload_key(geometry), tkey) in keys, workload.name
    for item in shipped():
        assert item.kernel_version == KERNEL_VERSION
        assert {"ms", "generic_ms", "date", "machine"} <= set(item.measured)


@pytest.mark.parametrize("workload, cpu", [(w.name, cpu) for cpu in SHIPPED_TARGETS
                                           for w in tuned_suite(cpu)],
                         ids=lambda v: v["mcpu"] if isinstance(v, dict) else v)
def test_each_shipped_record_computes_the_reference(workload, cpu):
    (layer,) = [w for w in load_workloads() if w.name == workload]
    spec = layer.spec()
    geometry = kernel_geometry(Geometry.from_spec(spec))
    its_cpu = tvm.target.Target(cpu)
    found = records.lookup(geometry, its_cpu, [records.SHIPPED_RECORDS])
    assert found is not None
    if host_cpu() != cpu["mcpu"]:
        # Not that CPU here: the record must still build (its code is not run).
        func, _ = records.kernel_from_schedule(geometry, its_cpu, found.schedule)
        tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                    target=its_cpu)
        return
    bench = tuning._Bench(spec, its_cpu)
    candidate = tuning.Candidate(workload, found.schedule)
    assert bench.build(candidate), candidate.problem


# --- the command -----------------------------------------------------------------------


LAYER = ["--width", "9", "--cin", "16", "--cout", "24", "--kernel", "4", "--stride", "2"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_tune_command_writes_records_and_resume_skips_them(tmp_path, limit_plans):
    limit_plans(2)
    database = tmp_path / "t.json"
    result = invoke("tune", *LAYER, "--database", database, "--processes", "1")
    assert result.exit_code == 0, result.output
    assert "custom" in result.output and database.exists()
    assert len(records.RecordStore(database).records) == 1
    again = invoke("tune", *LAYER, "--database", database, "--resume")
    assert again.exit_code == 0 and "recorded before" in again.output


@pytest.mark.parametrize("args, words", [
    (["--target", "cuda-sm80"], "tuning runs CPU (llvm) kernels"),
    (["--target", "rpi4"], "cannot be tuned here"),
    (["--trials", "-1"], "-1"),
    (["--processes", "-1"], "-1"),
    (["--only", "nope"], "no workload 'nope'"),
])
def test_tune_command_refuses_what_it_cannot_do(args, words):
    layer = [] if "--only" in args else LAYER
    result = invoke("tune", *layer, *args)
    assert result.exit_code == 2 and words in result.output, result.output


def test_compile_command_says_which_schedule_the_kernel_got(tmp_path, monkeypatch,
                                                          limit_plans):
    limit_plans(2)
    model = tmp_path / "m.onnx"
    assert invoke("export", *LAYER, "-o", model).exit_code == 0
    result = invoke("compile", model, "-o", tmp_path / "a")
    assert result.exit_code == 0 and "generic hand schedule" in result.output, result.output
    database = tmp_path / "t.json"
    monkeypatch.setenv(records.ENV_DATABASE, str(database))
    assert invoke("tune", *LAYER, "--target", "host", "--processes", "0").exit_code == 0
    result = invoke("compile", model, "-o", tmp_path / "b")
    assert result.exit_code == 0 and "schedule: tuned" in result.output, result.output


def test_new_user_records_change_the_cache_key(tmp_path, monkeypatch):
    from conv1d_transpose.compile.artifact import build_options
    from conv1d_transpose.compile.targets import get_target

    database = tmp_path / "t.json"
    monkeypatch.setenv(records.ENV_DATABASE, str(database))
    entry = get_target("host")
    before = build_options(entry)
    store = records.RecordStore(database)
    store.put(record("a"))
    store.save()
    after = build_options(entry)
    assert before != after
    store.put(record("b"))
    store.save()
    assert build_options(entry) != after
