"""`conv1d-transpose bench`: every backend on the workload suite, checked, then timed fairly.

For each workload, every backend (our TVM targets, onnxruntime, and TensorFlow and torch
when installed) first runs the same input and is compared with the numpy reference; a
backend over tolerance is FAIL and is not ranked. Then the backends, plus numpy's matmul
of a GEMM with the same FLOPs (the machine's practical peak), are timed in interleaved
rounds (A B C A B C ...) so that drift hits all alike. onnxruntime's and OpenBLAS's
worker threads keep spinning after a call and slow whatever runs next (a TVM kernel ran
up to ~3x slower right after an onnxruntime call on 2 cores), so every timed batch follows a short pause and one untimed call. Thread counts are
pinned equal where the library allows, and reported either way.

`run_bench(...)` returns the JSON document, `render` prints it and `plot` draws it;
the command `conv1d-transpose bench` (cli/bench.py) calls them.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import functools
import gc
import importlib
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from .compile.machine import cpu_model, physical_cores
from .graph.errors import ArgumentError, Conv1DTransposeError
from .graph.reference import max_error
from .peers import (Runner, Unavailable, litert_runner, onnxruntime_cuda_runner, openvino_runner,
                    tensorflow_runner, torch_runner)
from .workloads import load_workloads

# How much timing: calls per timed batch (`repeat`), interleaved rounds, untimed warm-up
# calls, the pause before each batch and the untimed running after it, and the most
# seconds one batch may take (a slow backend gets fewer calls per batch, never fewer
# rounds).
# The pause outlasts the worker threads that keep spinning after a call: onnxruntime's,
# OpenBLAS's, and torch's OpenMP threads (KMP_BLOCKTIME defaults to 200 ms), which
# otherwise slow whichever backend runs next.
# A quick run pauses as long: with 10 ms, `make demo`'s bench of hifigan-up1 gave tvm:host
# 11.4-16.0 ms (0.61x-0.77x onnxruntime) where 0.25 s gave 3.6-4.2 ms (1.40x-1.42x),
# 2026-11-26, AMD EPYC Zen 4, 2 vCPUs.
# After the pause, each library runs untimed for at least settle_s before its batch. The
# first calls after a sleep are slow while the CPU and the library's parked threads wake
# up, and a batch of 10 calls of the streaming chunk (0.2 ms each) sat in that transient:
# with one untimed call, tvm:host's median was 0.41 ms and onnxruntime's 0.50 (each
# batch's first timed call 0.81 ms); with 20 ms, 0.212 and 0.363, as each runs alone
# (0.20-0.21 and 0.35). `python tools/cpu/settle_trial.py stream-chunk 0` (and 0.02):
# interleaved with torch and TensorFlow, 30 rounds, 2026-11-27, Intel Xeon (Emerald
# Rapids), 2 vCPUs.
FULL = {"repeat": 10, "rounds": 8, "warmup": 2, "pause_s": 0.25, "settle_s": 0.02,
        "batch_s": 1.0}
QUICK = {"repeat": 3, "rounds": 2, "warmup": 1, "pause_s": 0.25, "settle_s": 0.02,
         "batch_s": 0.2}

REFERENCE_BACKEND = "onnxruntime:cpu"
# Other libraries on the GPU of a local CUDA target (peers.py), timed like tvm:<cuda>.
GPU_PEERS = ("torch:cuda", "onnxruntime:cuda")
# The workloads a geometric mean over the suite counts: the performance bars' "every
# workload of at least 50 MFLOP" (the streaming chunk has a bar of its own).
MEAN_MIN_MFLOP = 50
GEMM_FORM = ("numpy.matmul [M, K] @ [K, N] with M = batch*in_width, "
             "N = out_channels*kernel_width, K = in_channels: the same FLOPs as the layer "
             "(its GEMM + col2im form)")
_ALIASES = {"tf": "tensorflow", "pytorch": "torch", "ort": "onnxruntime", "ov": "openvino",
            "tflite": "litert"}


# --- backends -------------------------------------------------------------------------

def _onnxruntime_runner(spec, filters, threads, target="cpu") -> Runner:
    if target == "cuda":  # a peer on the GPU, not our fallback (see peers)
        return onnxruntime_cuda_runner(spec, filters, threads, target)
    from .op import Conv1DTranspose
    op = Conv1DTranspose(filters, spec.output_shape, spec.stride, spec.padding,
                         spec.data_format, spec.dilation, backend="onnxruntime",
                         threads=threads)
    return Runner(op.backend, "cpu", op, threads, True)


def _tvm_runner(spec, filters, threads, target="host", cache_dir=None) -> Runner:
    import tempfile

    from .op import Conv1DTranspose
    actual, pinned, note = _pin_tvm_threads(threads)

    def make(cache_dir):
        start = time.perf_counter()
        op = Conv1DTranspose(filters, spec.output_shape, spec.stride, spec.padding,
                             spec.data_format, spec.dilation, backend="tvm", target=target,
                             threads=threads, cache_dir=cache_dir)
        return op, time.perf_counter() - start

    # Both costs a user sees: a build into an empty cache, then a cache hit (load only):
    # the median of three loads, each made with no other instance of the layer alive, as
    # in a process that starts up. With the previous instance still holding its 128 MB,
    # demucs-dec1's hit took 58-335 ms on this VM (first touch of fresh memory), one-off
    # runs 2026-11-25.
    # A cache of the user's (`--cache-dir`): artifacts built elsewhere, e.g. for a GPU
    # machine whose TVM is runtime-only. Its first make may be a hit, not a build.
    given = cache_dir is not None
    with contextlib.ExitStack() as stack:
        if not given:
            cache_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="conv1d-transpose-bench-"))
            os.chmod(cache_dir, 0o700)
        op, compile_s = make(cache_dir)
        loads = []
        for _ in range(3):
            del op
            gc.collect()
            op, seconds = make(cache_dir)
            loads.append(seconds)
        load_s = statistics.median(loads)
    timing = {"compile_s": round(compile_s, 3), "load_ms": round(load_s * 1e3, 2),
              "load_ms_each": [round(t * 1e3, 2) for t in loads]}
    first = "first make (cache given)" if given else "compile"
    note = (f"{first} {compile_s:.1f} s, cache hit {load_s * 1e3:.0f} ms. {note}").strip()
    if op.backend != f"tvm:{target}":
        note = f"asked for tvm:{target}, got {op.backend}. {note}".strip()
    device = getattr(op._session, "device", None)  # an RPCSession: the remote device
    if device is not None:
        endpoint = op._session.endpoint
        via = f" via tracker {endpoint['tracker']}" if "tracker" in endpoint else ""
        if "emulated" in endpoint:
            # Emulation says nothing about speed: checked, never timed.
            runner = Runner(op.backend, target, op, None, True,
                            f"ran on emulated device {device}{via}: checked, not timed "
                            f"(emulation is for correctness only)")
            runner.timed = False
            return runner
        note = f"ran on {device}{via}; times include RPC transfers. {note}".strip()
        runner = Runner(op.backend, target, op, None, True, note)
    elif not getattr(op._session, "_on_cpu", True):  # a GPU: TVM's CPU threads don't apply
        runner = Runner(op.backend, target, op, None, True, note)
    else:
        runner = Runner(op.backend, target, op, actual, pinned, note)
    runner.build_timing = timing
    return runner


def _pin_tvm_threads(threads: int) -> tuple[int | None, bool, str]:
    try:
        from .compile.machine import configure_threads
    except ImportError as error:  # no TVM: the build will say more
        return None, False, f"TVM threads not pinned: {error}"
    return configure_threads(threads)


# Backend family -> factory(spec, filters, threads, target) -> Runner (raises Unavailable).
RUNNERS = {
    "tvm": _tvm_runner,
    "onnxruntime": _onnxruntime_runner,
    "tensorflow": tensorflow_runner,
    "torch": torch_runner,
    "openvino": openvino_runner,
    "litert": litert_runner,
}


def _target_entries() -> dict:
    """targets.yaml's entries, or {} where the compile stage is missing or broken (the
    bench still runs its other backends)."""
    try:
        from .compile.targets import load_targets
        return load_targets()
    except Exception:
        return {}


def runnable_tvm_targets() -> list[str]:
    """Names in targets.yaml whose code can run on this machine ('host' always)."""
    # Remote (rpc) targets only when asked for: a default run never waits on a device.
    names = [name for name, entry in _target_entries().items()
             if name == "host" or (not entry.rpc and entry.capabilities().can_run)]
    return names if "host" in names else ["host", *names]


def default_backends(targets=None) -> list[str]:
    targets = targets or runnable_tvm_targets()
    # With a CUDA target, torch and onnxruntime on the same GPU are the peers to beat there.
    gpu_peer = list(GPU_PEERS) if _local_cuda_targets(targets) else []
    return [f"tvm:{t}" for t in targets] + [REFERENCE_BACKEND, "tensorflow", "torch",
                                            "openvino", "litert", *gpu_peer]


def _local_cuda_targets(names) -> list[str]:
    """Those of `names` that are CUDA targets run on this machine's GPU (not over RPC)."""
    entries = _target_entries()
    return [n for n in names
            if n in entries and entries[n].family == "cuda" and not entries[n].rpc]


def parse_backends(backends, targets=None) -> list[tuple[str, str]]:
    """Backend names -> [(family, target)]; 'tvm' alone means every one of `targets`.

    Raises:
      ArgumentError naming an unknown backend or TVM target and what is allowed.
    """
    if backends is None:
        backends = default_backends(targets)
    if isinstance(backends, str):
        backends = backends.split(",")
    known_targets = None
    parsed = []
    for name in (b.strip() for b in backends):
        if not name:
            continue
        family, _, target = name.partition(":")
        family = _ALIASES.get(family.lower(), family.lower())
        if family not in RUNNERS:
            raise ArgumentError(
                f"backends: unknown backend {name!r}; allowed: tvm:<target> (targets.yaml "
                f"names, e.g. tvm:host), {', '.join(f for f in RUNNERS if f != 'tvm')} "
                f"(onnxruntime also as onnxruntime:cpu)")
        if family == "tvm":
            if known_targets is None:
                known_targets = _tvm_target_names()
            for t in [target] if target else (targets or runnable_tvm_targets()):
                if known_targets and t not in known_targets:
                    raise ArgumentError(f"backends: {('tvm:' + t)!r} names no target in "
                                        f"targets.yaml; known: {', '.join(known_targets)}")
                parsed.append(("tvm", t))
        elif f"{family}:{target}" in GPU_PEERS:
            parsed.append((family, "cuda"))
        elif target not in ("", "cpu"):
            where = "'cpu' or 'cuda'" if f"{family}:cuda" in GPU_PEERS else "'cpu' only"
            raise ArgumentError(f"backends: {name!r}: {family} runs on {where} here")
        else:
            parsed.append((family, "cpu"))
    if not parsed:
        raise ArgumentError("backends: give at least one backend")
    return list(dict.fromkeys(parsed))


def _tvm_target_names() -> list[str]:
    return list(_target_entries())


def _display_name(family: str, target: str) -> str:
    if family == "tvm":
        return f"tvm:{target}"
    if target == "cuda":
        return f"{family}:cuda"
    return REFERENCE_BACKEND if family == "onnxruntime" else family


# --- the machine ----------------------------------------------------------------------

def gemm_shape(spec) -> tuple[int, int, int]:
    """(M, N, K) of the GEMM with the layer's FLOPs (see GEMM_FORM)."""
    return (spec.batch * spec.in_width, spec.out_channels * spec.kernel_width,
            spec.in_channels)


def _gemm_call(spec):
    m, n, k = gemm_shape(spec)
    dtype = np.float64 if spec.dtype == "float64" else np.float32  # numpy has no half GEMM
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.empty((m, n), dtype)
    return lambda _x: np.matmul(a, b, out=out)


def _gpu_model() -> str | None:
    """'NVIDIA H100 80GB HBM3 (sm_90)' for CUDA device 0, or None without one."""
    try:
        from .compile.targets import cuda_device
        device = cuda_device()
    except Exception:
        return None
    return f"{device[0]} (sm_{device[1][0]}{device[1][1]})" if device else None


def _versions() -> dict:
    def version(*distributions):
        for distribution in distributions:
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None
    def imported(module):
        try:
            return importlib.import_module(module).__version__
        except Exception:  # missing or broken: the distribution's record, if any
            return None
    # onnxruntime as imported: onnxruntime-gpu installs the same module under another
    # distribution name, and may shadow a CPU-only onnxruntime on the path.
    return {"numpy": version("numpy"),
            "onnxruntime": imported("onnxruntime") or version("onnxruntime", "onnxruntime-gpu"),
            "tvm": version("apache-tvm"), "tensorflow": version("tensorflow-cpu", "tensorflow"),
            "torch": version("torch"), "conv1d-transpose": version("conv1d-transpose")}


class _Blas:
    """numpy's BLAS: what it is, and its thread count (pinned while the bench runs).

    threadpoolctl when installed; otherwise OpenBLAS's own C API found in this process.
    """

    def __init__(self):
        self.name, self.version, self._get, self._set = "unknown", None, None, None
        try:
            import threadpoolctl
            self._controller = threadpoolctl.ThreadpoolController()
            info = [m for m in self._controller.info() if m.get("user_api") == "blas"]
            if info:
                self.name = f"{info[0]['internal_api']} ({os.path.basename(info[0]['filepath'])})"
                self.version = info[0].get("version")
                self._get = lambda: self._controller.select(user_api="blas").info()[0]["num_threads"]
                self._set = lambda n: self._controller.limit(limits=n, user_api="blas")
                return
        except ImportError:
            pass
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            self.name, self.version = blas.get("name", "unknown"), blas.get("version")
        except Exception:
            pass
        self._get, self._set = _openblas_thread_functions()

    @property
    def threads(self) -> int | None:
        return int(self._get()) if self._get else None

    @contextlib.contextmanager
    def pinned(self, threads: int):
        before = self.threads
        if self._set:
            self._set(threads)
        try:
            yield
        finally:
            if self._set and before:
                self._set(before)

    def describe(self) -> dict:
        return {"library": self.name, "version": self.version, "threads": self.threads,
                "source": "threadpoolctl" if hasattr(self, "_controller") else "numpy.show_config"}


def _openblas_thread_functions():
    if not sys.platform.startswith("linux"):
        return None, None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None, None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern in ("scipy_openblas_{}64_", "openblas_{}64_", "openblas_{}"):
            get = getattr(library, pattern.format("get_num_threads"), None)
            set_ = getattr(library, pattern.format("set_num_threads"), None)
            if get and set_:
                set_.argtypes = [ctypes.c_int]
                return get, set_
    return None, None


# --- measurement ----------------------------------------------------------------------

class _Entrant:
    def __init__(self, key, call):
        self.key, self.call, self.times, self.calls = key, call, [], 1


def _interleaved(entrants, x, settings, advance):
    """Warm up, then time `rounds` rounds of every entrant in turn (start rotating)."""
    for entrant in entrants:
        fastest = math.inf
        for _ in range(settings["warmup"]):
            start = time.perf_counter()
            entrant.call(x)
            fastest = min(fastest, time.perf_counter() - start)
        fits = int(settings["batch_s"] / fastest) if fastest > 0 else settings["repeat"]
        entrant.calls = max(1, min(settings["repeat"], fits))
    for index in range(settings["rounds"]):
        shift = index % len(entrants)
        for entrant in entrants[shift:] + entrants[:shift]:
            time.sleep(settings["pause_s"])
            settled = time.perf_counter() + settings["settle_s"]
            entrant.call(x)  # untimed: wakes this library's threads and the CPU
            while time.perf_counter() < settled:
                entrant.call(x)
            for _ in range(entrant.calls):
                start = time.perf_counter()
                entrant.call(x)
                entrant.times.append(time.perf_counter() - start)
        advance()


def _summary(times, flops) -> dict:
    ms = np.asarray(times) * 1e3
    median = float(np.median(ms))
    return {"median_ms": median, "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)),
            "gflops": flops / (median * 1e-3) / 1e9 if median > 0 else None}


def _finite(value):
    return float(value) if value is not None and math.isfinite(value) else None


class _NoProgress:
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def _progress(enabled: bool):
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                  transient=True) as progress:
        yield progress


def run_bench(workloads, backends=None, dtype="float32", repeat=None, threads=None,
              quick=False, progress=True, *, rounds=None, targets=None,
              cache_dir=None, untuned=False) -> dict:
    """Check and time `backends` on `workloads`; returns the JSON document.

    Args:
      workloads: `Workload`s (default: the packaged suite).
      backends: names ('tvm:host', 'onnxruntime:cpu', 'tensorflow', 'torch'; 'tvm' means
        every target in `targets`), a list or a comma-separated string. Default: tvm on
        every target that runs here, onnxruntime, and the peers.
      dtype: 'float32', 'float16' or 'float64'.
      repeat: timed calls per backend per round (default 10, quick 3).
      threads: worker threads for every backend (default: physical cores).
      quick: few rounds and calls (for demos and tests). rounds: override the rounds.
      targets: TVM targets that 'tvm' expands to (default: those that run here).
      cache_dir: an artifact cache for the TVM backends (default: a fresh one, so that
        the compile time is measured); e.g. artifacts built on another machine.
      untuned: build every TVM kernel with the generic schedule, ignoring tuning records
        (the header says so).
      progress: show a progress bar on stderr.
    Returns:
      {"header": {...}, "records": [...]}; see docs/design/benchmarking.md.
    Raises:
      ArgumentError for an unknown backend, target or dtype.
    """
    if dtype not in ("float16", "float32", "float64"):
        raise ArgumentError(f"dtype={dtype!r} is not supported; allowed: float16, float32, float64")
    workloads = list(workloads) if workloads is not None else load_workloads()
    requested = parse_backends(backends, targets)
    settings = dict(QUICK if quick else FULL)
    for key, value in (("repeat", repeat), ("rounds", rounds)):
        if value is not None:
            if value < 1:
                raise ArgumentError(f"{key}={value} must be at least 1")
            settings[key] = int(value)
    threads = int(threads) if threads else physical_cores()
    if threads < 1:
        raise ArgumentError(f"threads={threads} must be at least 1")

    blas = _Blas()
    load_before = _load_average()
    header = {
        "machine": f"{platform.node()} ({platform.system()} {platform.machine()})",
        "cpu_model": cpu_model(), "cores": {"logical": os.cpu_count(), "physical": physical_cores()},
        "gpu": _gpu_model() if any(t == "cuda" for _, t in requested) or _local_cuda_targets(
            [t for family, t in requested if family == "tvm"]) else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": _versions(), "dtype": dtype, "settings": {**settings, "quick": bool(quick)},
        "gemm": f"{GEMM_FORM}, in {'float64' if dtype == 'float64' else 'float32'}",
        "blas": None,
        "threads": {"requested": threads, "backends": {}},
        "sgemm_gflops": {}, "workloads": [], "load_average": None,
        "tvm_schedules": "generic (--untuned: no tuning record applied)" if untuned
        else "tuning records where one exists for the layer, else generic",
    }
    records = []
    previous_tvm_threads = os.environ.get("TVM_NUM_THREADS")
    with blas.pinned(threads), _progress(progress) as bar, _tuning_records(not untuned):
        header["blas"] = blas.describe()
        task = bar.add_task("bench", total=len(workloads) * (len(requested) + settings["rounds"]))
        for workload in workloads:
            spec = workload.spec(dtype)
            x, f = workload.arrays(dtype)
            runners, workload_records = [], []
            for family, target in requested:
                name = _display_name(family, target)
                bar.update(task, description=f"{workload.name}: preparing {name}")
                record = {"workload": workload.name, "backend": name, "target": target,
                          "dtype": dtype, "median_ms": None, "p10_ms": None, "p90_ms": None,
                          "gflops": None, "speedup_vs_onnxruntime": None, "pct_of_sgemm": None,
                          "max_abs_err": None, "status": None, "rank": None,
                          "threads": None, "calls": 0, "note": "",
                          "compile_s": None, "load_ms": None}
                runner = None
                try:
                    factory = RUNNERS[family]
                    if family == "tvm" and cache_dir is not None:
                        factory = functools.partial(factory, cache_dir=cache_dir)
                    runner = factory(spec, f, threads, target)
                    record.update(backend=runner.backend, threads=runner.threads, note=runner.note,
                                  **getattr(runner, "build_timing", {}))
                    y = runner.call(x)
                except (Unavailable, Conv1DTransposeError) as error:
                    record["status"] = f"skipped: {_first_line(error)}"
                except Exception as error:  # a backend crashing on a valid call is a failure
                    record.update(status="FAIL", note=f"raised {type(error).__name__}: "
                                                      f"{_first_line(error)}")
                else:
                    error, ok = max_error(y, x, f, spec)
                    record.update(max_abs_err=_finite(error), status="ok" if ok else "FAIL")
                    header["threads"]["backends"][record["backend"]] = {
                        "threads": runner.threads, "pinned": runner.pinned, "note": runner.note}
                    if ok and getattr(runner, "timed", True):
                        runners.append((record, runner))
                workload_records.append(record)
                bar.advance(task)

            entrants = [_Entrant(record, runner.call) for record, runner in runners]
            gemm = _Entrant(None, _gemm_call(spec))
            bar.update(task, description=f"{workload.name}: timing {len(entrants)} backends + sgemm")
            _interleaved(entrants + [gemm], x, settings, lambda: bar.advance(task))

            sgemm = _summary(gemm.times, spec.flops)["gflops"]
            header["sgemm_gflops"][workload.name] = sgemm
            header["workloads"].append({
                "name": workload.name, "input_shape": list(spec.input_shape),
                "filters_shape": list(spec.filters_shape), "output_shape": list(spec.output_shape),
                "strides": spec.stride, "padding": spec.padding, "dilations": spec.dilation,
                "data_format": spec.data_format, "flops": spec.flops,
                "gemm_mnk": list(gemm_shape(spec)), "sgemm_gflops": sgemm})
            for entrant in entrants:
                entrant.key.update(_summary(entrant.times, spec.flops), calls=len(entrant.times))
            _rank(workload_records, sgemm)
            records.extend(workload_records)
    header["load_average"] = {"before": load_before, "after": _load_average()}
    if previous_tvm_threads is None:
        os.environ.pop("TVM_NUM_THREADS", None)
    else:
        os.environ["TVM_NUM_THREADS"] = previous_tvm_threads
    return {"header": header, "records": records}


@contextlib.contextmanager
def _tuning_records(apply: bool):
    """Within: TVM builds use tuning records (apply) or the generic schedule alone."""
    from .compile.records import ENV_RECORDS

    previous = os.environ.get(ENV_RECORDS)
    if not apply:
        os.environ[ENV_RECORDS] = "off"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_RECORDS, None)
        else:
            os.environ[ENV_RECORDS] = previous


def require_matplotlib(path: str) -> None:
    """Before a bench of minutes: --plot needs matplotlib (extra `bench`); say so now,
    not after the measurements (which would be lost with the traceback).

    Raises:
      ArgumentError naming `path` and the install hint, where matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ArgumentError(f"--plot {path}: matplotlib is not installed (pip install "
                            f"'conv1d-transpose[bench]'); leave out --plot, or install it") from None


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): a busy machine's numbers are noise."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _rank(records, sgemm_gflops):
    ranked = sorted((r for r in records if r["status"] == "ok" and r["median_ms"]),
                    key=lambda r: r["median_ms"])
    reference = next((r["median_ms"] for r in ranked if r["backend"] == REFERENCE_BACKEND), None)
    for position, record in enumerate(ranked, 1):
        record["rank"] = position
        if reference:
            record["speedup_vs_onnxruntime"] = reference / record["median_ms"]
        if sgemm_gflops and record["gflops"]:
            record["pct_of_sgemm"] = 100.0 * record["gflops"] / sgemm_gflops


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- output ---------------------------------------------------------------------------

def render(document, console=None) -> None:
    """The terminal report: the machine, then one table per workload."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    if not console.is_terminal:  # a file or pipe does not wrap: don't fold the tables
        console = Console(file=console.file, width=max(console.width, 130))
    h = document["header"]
    versions = ", ".join(f"{k} {v}" for k, v in h["versions"].items() if v)
    blas = h["blas"] or {}
    console.print(f"[bold]{h['cpu_model']}[/] ({h['cores']['physical']} cores), {h['machine']}, "
                  f"{h['date']}, {h['dtype']}, {h['threads']['requested']} threads")
    if h.get("gpu"):
        console.print(f"GPU: [bold]{h['gpu']}[/]")
    console.print(f"[dim]{versions}; BLAS {blas.get('library')} {blas.get('version') or ''} "
                  f"({blas.get('threads')} threads)[/]")
    console.print(f"[dim]sgemm: {h['gemm']}[/]")
    if h.get("tvm_schedules"):
        console.print(f"[dim]TVM kernels: {h['tvm_schedules']}[/]")
    unpinned = {n: t["note"] for n, t in h["threads"]["backends"].items() if not t["pinned"]}
    for name, note in unpinned.items():
        console.print(f"[yellow]threads not pinned for {name}:[/] {note}")
    if _busy_note(h):
        console.print(f"[yellow]{_busy_note(h).lstrip('; ')}[/]")

    for w in h["workloads"]:
        m, n, k = w["gemm_mnk"]
        shapes = f"{w['input_shape']} -> {w['output_shape']}".replace(" ", "").replace("->", " -> ")
        title = (f"[bold]{w['name']}[/]  {shapes}, K={w['filters_shape'][0]} s={w['strides']} "
                 f"{w['padding']} d={w['dilations']} {w['data_format']}, "
                 f"{w['flops'] / 1e6:.1f} MFLOP; numpy sgemm {m}x{n}x{k}: "
                 f"{_rate(w['sgemm_gflops'])} GFLOP/s")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("backend", "threads", "status", "max abs err", "median ms", "p10 ms",
                       "p90 ms", "GFLOP/s", "vs onnxruntime", "% sgemm", "rank"):
            table.add_column(column, justify="left" if column in ("backend", "status") else "right",
                             no_wrap=column == "backend")
        notes = []
        for r in (r for r in document["records"] if r["workload"] == w["name"]):
            status = r["status"]
            if status.startswith("skipped"):
                notes.append(f"{r['backend']}: {status}")
                status = "[yellow]skipped[/]"
            elif status == "FAIL":
                if r["note"]:
                    notes.append(f"{r['backend']}: {r['note']}")
                status = "[red]FAIL[/]"
            else:
                if r["note"] and r["median_ms"] is None:  # checked, not timed (emulated)
                    notes.append(f"{r['backend']}: {r['note']}")
                status = "[green]ok[/]"
            table.add_row(r["backend"], _num(r["threads"], "{}"), status,
                          _num(r["max_abs_err"], "{:.1e}"), _num(r["median_ms"], "{:.3f}"),
                          _num(r["p10_ms"], "{:.3f}"), _num(r["p90_ms"], "{:.3f}"),
                          _rate(r["gflops"]), _num(r["speedup_vs_onnxruntime"], "{:.2f}x"),
                          _num(r["pct_of_sgemm"], "{:.0f}%"), _num(r["rank"], "{}"))
        if notes:
            table.caption = "\n".join(notes)
            table.caption_justify = "left"
        console.print(table)
    means = geomean_vs_onnxruntime(document)
    if means:
        count = next(iter(means.values()))[1]
        console.print(f"geometric mean vs onnxruntime over the {count} workload(s) of at least "
                      f"{MEAN_MIN_MFLOP} MFLOP: " +
                      ", ".join(f"{name} {mean:.2f}x" for name, (mean, _) in means.items()))


def markdown_table(document) -> str:
    """The run as one markdown table: per workload, each backend's median ms (or why it
    was skipped or failed) and tvm's speedup over onnxruntime (`bench --markdown`)."""
    backends = list(dict.fromkeys(r["backend"] for r in document["records"]))
    tvm = [b for b in backends if b.startswith("tvm:")]
    lines = ["| workload | MFLOP | " + " | ".join(backends) +
             "".join(f" | {b} vs onnxruntime" for b in tvm) + " |",
             "|---|---|" + "---|" * (len(backends) + len(tvm))]
    for w in document["header"]["workloads"]:
        by = {r["backend"]: r for r in document["records"] if r["workload"] == w["name"]}

        def cell(backend):
            r = by.get(backend)
            if r is None:
                return ""
            if r["median_ms"] is not None:
                return f"{r['median_ms']:.3f}"
            return "FAIL" if r["status"] == "FAIL" else "skipped"
        speedups = "".join(f" | {by[b]['speedup_vs_onnxruntime']:.2f}x"
                           if b in by and by[b]["speedup_vs_onnxruntime"] else " | "
                           for b in tvm)
        lines.append(f"| {w['name']} | {w['flops'] / 1e6:.0f} | " +
                     " | ".join(cell(b) for b in backends) + speedups + " |")
    means = geomean_vs_onnxruntime(document)
    for backend, (mean, count) in means.items():
        lines.append(f"\nGeometric mean of {backend} vs onnxruntime over the {count} "
                     f"workloads of at least {MEAN_MIN_MFLOP} MFLOP: {mean:.2f}x.")
    return "\n".join(lines) + "\n"


def geomean_vs_onnxruntime(document, min_mflop: float = MEAN_MIN_MFLOP) -> dict:
    """{backend: (geometric mean of its speedup over onnxruntime, workloads counted)} over
    the workloads of at least `min_mflop` where onnxruntime and the backend both ran;
    a backend missing on one of them is left out, so every mean covers the same layers."""
    large = [w["name"] for w in document["header"]["workloads"]
             if w["flops"] >= min_mflop * 1e6]
    ratios: dict[str, dict[str, float]] = {}
    for r in document["records"]:
        if r["workload"] in large and r["speedup_vs_onnxruntime"] and \
                r["backend"] != REFERENCE_BACKEND:
            ratios.setdefault(r["backend"], {})[r["workload"]] = r["speedup_vs_onnxruntime"]
    return {name: (math.exp(sum(math.log(v) for v in values.values()) / len(values)),
                   len(values))
            for name, values in ratios.items() if large and set(values) == set(large)}


def _busy_note(header) -> str:
    loads = [v for v in (header.get("load_average") or {}).values() if v is not None]
    cpus = header["cores"]["logical"] or 1
    if loads and max(loads) > 0.5 * cpus:
        return f"; busy machine (load average {max(loads)} on {cpus} CPUs): noisy numbers"
    return ""


def _rate(gflops):
    return "-" if gflops is None else f"{gflops:.1f}" if gflops >= 10 else f"{gflops:.3g}"


def _num(value, form):
    return form.format(value) if value is not None else "-"


_FAMILY_COLOURS = {"onnxruntime": ["#1f77b4"], "tensorflow": ["#2ca02c"], "torch": ["#9467bd"],
                   "tvm": ["#d62728", "#ff7f0e", "#e377c2", "#8c564b", "#bcbd22"]}


def plot(document, path) -> None:
    """Grouped bars of GFLOP/s per workload (log scale), one colour per backend.

    GFLOP/s rather than ms: the suite's layers differ 1000x in work, so times share no
    scale, while rates sit within one decade of the machine's GEMM rate (the black line).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, records = document["header"], document["records"]
    names = [w["name"] for w in h["workloads"]]
    backends = list(dict.fromkeys(r["backend"] for r in records))
    colours, used = {}, {}
    for backend in backends:
        family = backend.split(":")[0]
        palette = _FAMILY_COLOURS.get(family, ["#7f7f7f", "#17becf"])
        colours[backend] = palette[used.get(family, 0) % len(palette)]
        used[family] = used.get(family, 0) + 1
    by_key = {(r["workload"], r["backend"]): r for r in records}
    spec_flops = {w["name"]: w["flops"] for w in h["workloads"]}
    labelled = set()
    width = 0.8 / max(len(backends), 1)
    figure, axes = plt.subplots(figsize=(max(8.0, 1.25 * len(names) + 3), 5.5), dpi=120)
    rates = [r["gflops"] for r in records if r["gflops"]] + \
        [v for v in h["sgemm_gflops"].values() if v]
    low = min(rates) / 2 if rates else 0.1
    for j, backend in enumerate(backends):
        offset = (j - (len(backends) - 1) / 2) * width
        for i, name in enumerate(names):
            r = by_key.get((name, backend))
            if r is None:
                continue
            x = i + offset
            if r["status"] == "ok" and r["gflops"]:
                # Whiskers: the rates at the p90 and p10 times, i.e. the timing spread.
                slow, fast = spec_flops[name] / (r["p90_ms"] * 1e6), spec_flops[name] / (r["p10_ms"] * 1e6)
                axes.bar(x, r["gflops"], width * 0.92, color=colours[backend],
                         label=backend if backend not in labelled else None)
                labelled.add(backend)
                axes.errorbar(x, r["gflops"], yerr=[[r["gflops"] - slow], [fast - r["gflops"]]],
                              fmt="none", ecolor="#333333", elinewidth=0.7, capsize=0)
                axes.text(x, fast * 1.05, f"{r['gflops']:.0f}" if r["gflops"] >= 10
                          else f"{r['gflops']:.2g}", ha="center", va="bottom", fontsize=7,
                          rotation=90)
            else:
                word = "FAIL" if r["status"] == "FAIL" else "n/a"
                axes.text(x, low * 1.15, word, ha="center", va="bottom", fontsize=6,
                          rotation=90, color="#b00020" if word == "FAIL" else "#888888")
    for i, name in enumerate(names):
        sgemm = h["sgemm_gflops"].get(name)
        if sgemm:
            axes.hlines(sgemm, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.2,
                        label="numpy sgemm, same FLOPs" if i == 0 else None)
    axes.set_yscale("log")
    axes.set_ylim(bottom=low)
    fastest = [spec_flops[r["workload"]] / (r["p10_ms"] * 1e6) for r in records if r["p10_ms"]]
    axes.set_ylim(top=max(fastest + rates + [1]) * 2.0)
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels([f"{n}\n{spec_flops[n] / 1e6:.0f} MFLOP" for n in names], fontsize=8)
    axes.set_ylabel("GFLOP/s (log scale, higher is better)")
    axes.grid(axis="y", which="both", alpha=0.25)
    axes.set_axisbelow(True)
    date = h["date"][:16].replace("T", " ")
    axes.set_title(f"conv1d_transpose {h['dtype']} on {h['cpu_model']} "
                   f"({h['cores']['physical']} cores, {h['threads']['requested']} threads), {date}\n"
                   f"bars: median; whiskers: p10-p90; dashed: numpy GEMM with the same FLOPs"
                   f"{_busy_note(h)}", fontsize=10)
    axes.legend(fontsize=8, ncol=len(backends) + 1, loc="upper center",
                bbox_to_anchor=(0.5, -0.13), frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
