"""Tuning records: the schedules that `conv1d-transpose tune` found (compile/tuning.py),
as every compile reads them.

Records are keyed by workload (every integer of the kernel's `Geometry`), target (kind,
triple, CPU, features: not the core count) and kernel version (a record for an older
kernel is ignored). At compile time `tuned_kernel` looks in the user's database
(`$CONV1D_TRANSPOSE_TUNING`, default ~/.local/share/conv1d-transpose/tuning.json), then in
the records shipped with the package (`tuning_records.json`); a shape with no record
gets the generic hand schedule. A record is small, reviewable JSON: the plan's fields,
or the MetaSchedule trace (its sampled decisions), never the IR.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile

from ..graph.errors import ArgumentError
from .kernels import KERNEL_VERSION, Geometry, plan_layout, target_family
from .kernels import schedule_cpu

RECORDS_FORMAT = 1
ENV_DATABASE = "CONV1D_TRANSPOSE_TUNING"
# "off": no record applies, neither the user's nor the shipped ones; every kernel gets
# the generic hand schedule, as a user's own layer does (`bench --untuned`).
ENV_RECORDS = "CONV1D_TRANSPOSE_RECORDS"
SHIPPED_RECORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "tuning_records.json")


def default_database() -> str:
    """$CONV1D_TRANSPOSE_TUNING, else $XDG_DATA_HOME/conv1d-transpose/tuning.json."""
    env = os.environ.get(ENV_DATABASE)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(os.path.abspath(base), "conv1d-transpose", "tuning.json")


# --- keys --------------------------------------------------------------------------


def workload_key(geometry: Geometry) -> str:
    """Every integer that determines the kernel, in one readable string."""
    g = geometry
    batch = "any" if g.batch is None else g.batch
    folded = (f"-folded{g.folded_stride}x{g.folded_width}+{g.folded_offset}"
              if g.folded_stride > 1 else "")
    return (f"n{batch}-w{g.in_width}-ci{g.in_channels}-o{g.out_width}-co{g.out_channels}"
            f"-k{g.kernel_width}-s{g.stride}-d{g.dilation}-p{g.pad_begin}-{g.data_format}"
            f"-{g.dtype}{folded}")


def target_key(target) -> str:
    """What makes code for one machine differ from another's: kind, triple, CPU and
    features (the core count only sizes the thread pool, so it is left out)."""
    attrs = target.attrs
    parts = [target.kind.name]
    for name in ("mtriple", "mcpu", "arch"):
        value = attrs.get(name)
        if value:
            parts.append(f"{name}={value}")
    mattr = attrs.get("mattr")
    if mattr:
        parts.append("mattr=" + ",".join(sorted(str(a) for a in mattr)))
    return " ".join(parts)


# --- records -----------------------------------------------------------------------


@dataclasses.dataclass
class Record:
    """One tuned schedule: `schedule` is {"kind": "generic"} (the rules' plan is the
    fastest found), {"kind": "plan", "plan": {...}} or {"kind": "metaschedule",
    "out_tile": n, "trace": [...]}; `measured` says how it was chosen."""

    workload: str
    target: str
    kernel_version: str
    schedule: dict
    measured: dict

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.workload, self.target, self.kernel_version)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True)
                              .encode()).hexdigest()[:16]


class RecordStore:
    """A JSON file of records: {"format": 1, "records": [...]}, written atomically."""

    def __init__(self, path: str):
        self.path = os.path.abspath(os.fspath(path))
        self.records: dict[tuple, Record] = {}
        if os.path.exists(self.path):
            self.records = {r.key: r for r in _read_records(self.path)}

    def get(self, workload: str, target: str) -> Record | None:
        return self.records.get((workload, target, KERNEL_VERSION))

    def put(self, record: Record) -> None:
        self.records[record.key] = record

    def save(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        body = {"format": RECORDS_FORMAT,
                "records": [dataclasses.asdict(r) for _, r in sorted(self.records.items())]}
        fd, temp = tempfile.mkstemp(prefix=".tuning-", dir=directory)
        try:
            os.chmod(temp, 0o644)  # records are data to share (mkstemp makes 0600)
            with os.fdopen(fd, "w") as file:
                # One record per line group, stable order: diffs of shipped records stay
                # reviewable.
                json.dump(body, file, indent=1, sort_keys=True)
                file.write("\n")
            os.replace(temp, self.path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise


def _read_records(path: str) -> list[Record]:
    try:
        with open(path) as file:
            body = json.load(file)
    except (OSError, ValueError) as error:
        raise ArgumentError(f"tuning database {path!r} cannot be read: {error}; fix or "
                            f"delete it") from None
    if not isinstance(body, dict) or body.get("format") != RECORDS_FORMAT or \
            not isinstance(body.get("records"), list):
        raise ArgumentError(f"tuning database {path!r} is not a format-{RECORDS_FORMAT} "
                            f"records file ({{\"format\": {RECORDS_FORMAT}, \"records\": [...]}})")
    fields = {f.name for f in dataclasses.fields(Record)}
    records = []
    for index, item in enumerate(body["records"]):
        if not isinstance(item, dict) or set(item) != fields:
            raise ArgumentError(f"tuning database {path!r}: record {index} must have exactly "
                                f"the keys {sorted(fields)}")
        records.append(Record(**item))
    return records


def lookup(geometry: Geometry, target, databases: list[str] | None = None) -> Record | None:
    """The record for this kernel on this target: the user's database first, then the
    shipped records. A database that cannot be read is skipped with a warning."""
    import warnings

    if databases is None and not records_apply():
        return None
    wk, tk = workload_key(geometry), target_key(target)
    for path in databases if databases is not None else [default_database(), SHIPPED_RECORDS]:
        if not os.path.exists(path):
            continue
        try:
            record = RecordStore(path).get(wk, tk)
        except ArgumentError as error:
            warnings.warn(f"{error}; ignoring it", stacklevel=2)
            continue
        if record is not None:
            return record
    return None


def records_apply() -> bool:
    """False when $CONV1D_TRANSPOSE_RECORDS is "off" (see ENV_RECORDS)."""
    return os.environ.get(ENV_RECORDS, "").strip().lower() != "off"


def databases_digest() -> str:
    """Part of the compile cache key: a changed user database must not reuse a library
    built with the old records (the shipped file is hashed with compile/ already)."""
    if not records_apply():
        return "off"
    path = default_database()
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()[:16]
    except OSError:
        return "none"


# --- kernels from records ------------------------------------------------------------


def tuned_kernel(geometry: Geometry, target, record: Record | None = None):
    """(scheduled PrimFunc, KernelLayout, record or None) for a CPU target: the record's
    schedule when one exists (and applies), else the generic hand schedule."""
    import warnings

    if record is None and target_family(target) == "cpu":
        record = lookup(geometry, target)
    if record is not None:
        try:
            func, layout = kernel_from_schedule(geometry, target, record.schedule)
            return func, layout, record
        except Exception as error:  # a record that no longer replays: never fail a build
            warnings.warn(f"tuning record for {record.workload} on {record.target} does not "
                          f"apply ({error_summary(error)}); using the generic "
                          f"schedule", stacklevel=2)
    from .kernels import build_kernel

    func, layout = build_kernel(geometry, target)
    return func, layout, None


def kernel_from_schedule(geometry: Geometry, target, schedule: dict):
    """(scheduled PrimFunc, KernelLayout) of one record's `schedule` dict."""
    kind = schedule.get("kind")
    if kind == "generic":
        return schedule_cpu.build(geometry, target)
    if kind == "plan":
        return schedule_cpu.build(geometry, target, plan_from_dict(schedule["plan"]))
    if kind == "metaschedule":
        return _apply_trace(geometry, int(schedule["out_tile"]), schedule["trace"])
    raise ValueError(f"unknown schedule kind {kind!r}")


def plan_to_dict(plan: schedule_cpu.CpuPlan) -> dict:
    return dataclasses.asdict(plan)


def plan_from_dict(data: dict) -> schedule_cpu.CpuPlan:
    data = dict(data)
    tiling = schedule_cpu.Tiling(**data.pop("tiling"))
    return schedule_cpu.CpuPlan(tiling=tiling, **data)


def unscheduled_kernel(geometry: Geometry, out_tile: int):
    """The kernel MetaSchedule tunes: packed filters in `out_tile`-channel blocks (so
    channels are contiguous for its vectorizer), no row or reduction padding."""
    import tvm

    from .kernels.forms import build_primfunc
    from .kernels.layout import Tiling

    layout = plan_layout(geometry, Tiling(1, out_tile, 1))
    func = build_primfunc(layout).with_attr("global_symbol", "main")
    return tvm.IRModule({"main": func}), layout


def _apply_trace(geometry: Geometry, out_tile: int, trace):
    import tvm

    mod, layout = unscheduled_kernel(geometry, out_tile)
    sch = tvm.s_tir.Schedule(mod)
    tvm.s_tir.schedule.Trace.apply_json_to_schedule(trace, sch)
    func = sch.mod["main"]
    return func.without_attr("global_symbol"), layout


def error_summary(error: Exception) -> str:
    """One line of a TVM error (which carries the whole IR): its type and message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = next((line for line in lines if line.startswith("Error message:")),
                   lines[0] if lines else "")
    return f"{type(error).__name__}: {message[:200]}"
