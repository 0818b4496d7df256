"""Edge devices: arm64 artifacts run over TVM RPC on an emulated aarch64 device.

One emulated device (and, for the tracker test, a fleet of two) is started for the
module in a private device directory (image ~30 s once, each server ~5-10 s) and stopped
at the end; the last test checks that nothing it started is left running. Results are
checked against the numpy reference; emulation is never timed.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import conv1d_transpose as ct
from conv1d_transpose import device as devices
from conv1d_transpose.cli.device import device as device_command
from conv1d_transpose.graph import max_error
from conv1d_transpose.graph.errors import BackendError
from conv1d_transpose.graph.sweeps import channel_sweep, foundation_sweep, random_arrays
from conv1d_transpose.workloads import find_workload

pytestmark = pytest.mark.device

TARGET, FLEET_TARGET = "arm64-emulated", "arm64-emulated-fleet"
STARTED_PIDS: set[int] = set()


def _session_pids(state):
    import psutil

    pids = set()
    for record in devices.recorded_processes(state):
        process = devices.process_alive(record)
        if process is not None:
            pids.add(process.pid)
            pids.update(child.pid for child in process.children(recursive=True))
    return pids


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory):
    reason = devices.missing_requirements("arm64")
    if reason:
        pytest.skip(f"no emulated arm64 device here: {reason}")
    if not shutil.which("aarch64-linux-gnu-gcc"):
        pytest.skip("aarch64-linux-gnu-gcc not found (apt-get install gcc-aarch64-linux-gnu)")
    path = tmp_path_factory.mktemp("devices")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(devices.ENV_DEVICE_DIR, str(path))
        try:
            yield path
        finally:
            devices.stop()


@pytest.fixture(scope="module")
def emulated(device_dir):
    state = devices.start("arm64")
    STARTED_PIDS.update(_session_pids(state))
    return state


@pytest.fixture(scope="module")
def fleet(device_dir):
    state = devices.start("arm64", fleet=2)
    STARTED_PIDS.update(_session_pids(state))
    return state


def test_start_is_idempotent_on_loopback_and_status_reports_it(emulated):
    again = devices.start("arm64")
    assert again["servers"][0]["pid"] == emulated["servers"][0]["pid"]
    assert again["port"] == emulated["port"] and emulated["host"] == "127.0.0.1"
    command = " ".join(emulated["servers"][0]["command"])
    assert "--host 127.0.0.1" in command or "127.0.0.1" in emulated["servers"][0]["command"]
    (row,) = [r for r in devices.status() if r["name"] == "arm64"]
    assert row["running"] and row["address"] == f"127.0.0.1:{emulated['port']}"
    result = CliRunner().invoke(device_command, ["status"])
    assert result.exit_code == 0 and "running" in result.output, result.output
    result = CliRunner().invoke(device_command, ["start", "--emulate", "arm64"])
    assert result.exit_code == 0 and str(emulated["port"]) in result.output, result.output
    from conv1d_transpose.compile.targets import get_target
    capabilities = get_target(TARGET).capabilities()
    assert capabilities.can_run and f"runs over RPC at 127.0.0.1:{emulated['port']}" in \
        capabilities.run_reason


def _sample(count=24):
    layers = [layer for layer in foundation_sweep()
              if 0 not in layer.input_shape and layer.kernel_width > 0]
    step = max(1, len(layers) // count)
    return layers[::step][:count]


def _wrong_on_device(layers, dtype):
    """(dtype, name, error) of each layer whose result on the device is wrong."""
    wrong = []
    for layer in layers:
        x, f = layer.arrays(dtype)
        y = ct.conv1d_transpose(x, f, layer.output_shape, layer.stride, layer.padding,
                                layer.data_format, layer.dilation, backend="tvm", target=TARGET)
        error, ok = max_error(y, x, f, layer.spec(dtype))
        if not ok:
            wrong.append((dtype, layer.name, error))
    return wrong


def test_foundation_sweep_sample_over_rpc(emulated):
    sample = _sample()
    assert {layer.data_format for layer in sample} == {"NWC", "NCW"}
    assert {layer.padding for layer in sample} == {"SAME", "VALID"}
    failures = _wrong_on_device(sample, "float32")
    assert not failures, failures


def test_channel_sweep_sample_over_rpc(emulated):
    """Channel counts 1..7 and one-output-channel ISTFT-like layers (folded kernels) on
    the arm64 device: every 6th case of the channel sweep, in every dtype."""
    layers = list(channel_sweep())
    failures = []
    for dtype, offset in (("float32", 0), ("float16", 2), ("float64", 4)):
        sample = [layer for layer in layers[offset::6] if 0 not in layer.input_shape]
        failures += _wrong_on_device(sample, dtype)
    assert not failures, failures


# demucs-dec1 (64 MB of weights to upload, 2 GFLOP under qemu: ~50 s) runs with the slow
# campaigns; stream-chunk keeps the path in the default run.
@pytest.mark.parametrize("workload", ["stream-chunk",
                                      pytest.param("demucs-dec1", marks=pytest.mark.slow)])
def test_workloads_over_rpc(emulated, workload):
    w = find_workload(workload)
    spec = w.spec("float32")
    x, f = w.arrays("float32")
    op = ct.Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                            spec.dilation, backend="auto", target=TARGET)
    assert op.backend == f"tvm:{TARGET}"  # auto: reachable and scheduled, so used
    assert op._session.emulated and op._session.device == f"127.0.0.1:{emulated['port']}"
    error, ok = max_error(op(x), x, f, spec)
    assert ok, error
    session = ct.InferenceSession(op.to_onnx(), backend="tvm", target=TARGET)
    assert session.backend == f"tvm:{TARGET}"
    assert [i.name for i in session.get_inputs()] == ["input"]
    (y,) = session.run(None, {"input": x})
    assert max_error(y, x, f, spec)[1]


def test_cli_run_on_the_device(emulated, tmp_path):
    from conv1d_transpose.cli import main

    runner = CliRunner()
    model, artifact = tmp_path / "m.onnx", tmp_path / "art"
    assert runner.invoke(main, ["export", "--workload", "stream-chunk", "-o", str(model)]).exit_code == 0
    result = runner.invoke(main, ["compile", str(model), "--target", "arm64", "-o", str(artifact)])
    assert result.exit_code == 0, result.output
    w = find_workload("stream-chunk")
    x, f = w.arrays("float32")
    np.save(tmp_path / "x.npy", x)
    result = runner.invoke(main, ["run", str(artifact), "--input", str(tmp_path / "x.npy"),
                                  "--target", TARGET, "--output", str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    assert f"tvm:{TARGET}" in result.output
    assert max_error(np.load(tmp_path / "y.npy"), x, f, w.spec("float32"))[1]


def test_one_library_is_uploaded_once_per_connection_under_a_fresh_name(emulated):
    # Regression: two sessions of one model in one process share the device connection;
    # the second used to upload the same bytes over the file the server had dlopen'ed,
    # which drops its relocated pages and segfaulted the server in dlsym.
    model = ct.Conv1DTranspose(np.ones((3, 2, 2), np.float32), [1, 8, 2], 2,
                               backend="onnxruntime").to_onnx()
    first = ct.InferenceSession(model, backend="tvm", target=TARGET)._session
    second = ct.InferenceSession(model, backend="tvm", target=TARGET)._session
    assert first._connection is second._connection
    sha = first.artifact.manifest["library_sha256"]
    assert list(first._connection.modules).count(sha) == 1
    x = np.ones(first.get_inputs()[0].shape, np.float32)
    assert np.array_equal(first.run(None, {"input": x})[0], second.run(None, {"input": x})[0])
    log = open(emulated["servers"][0]["log"], encoding="utf-8").read()
    assert log.count(f"conv1d-transpose-{sha[:16]}") == 1, "uploaded (loaded) twice"


def test_a_crashed_session_leaves_the_device_serving(emulated, tmp_path):
    # A library whose constructor segfaults kills the session's process on the device;
    # the device goes on serving, and the pool replaces the dead connection.
    source = tmp_path / "crash.c"
    source.write_text("__attribute__((constructor)) static void crash(void) "
                      "{ *(volatile int *)0 = 0; }\n")
    library = tmp_path / "crash.so"
    subprocess.run(["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-o", str(library),
                    str(source)], check=True)
    model = ct.Conv1DTranspose(np.ones((3, 2, 2), np.float32), [1, 8, 2], 2,
                               backend="onnxruntime").to_onnx()
    session = ct.InferenceSession(model, backend="tvm", target=TARGET)._session
    x = np.ones(session.get_inputs()[0].shape, np.float32)
    expected = session.run(None, {"input": x})[0]
    remote = session._connection.remote
    remote.upload(bytearray(library.read_bytes()), "crash.so")
    with pytest.raises(Exception, match="kShutdown|closed|reset"):
        remote.load_module("crash.so")
    assert devices.running("arm64")
    # The pool still holds that connection (nothing told it): a new session finds it
    # dead, warns and retries once on a new connection.
    with pytest.warns(RuntimeWarning, match="retrying once on a new connection"):
        fresh = ct.InferenceSession(model, backend="tvm", target=TARGET)._session
    assert fresh._connection is not session._connection and session._connection.broken
    with pytest.raises(BackendError, match="session ended"):
        session.run(None, {"input": x})
    assert np.array_equal(fresh.run(None, {"input": x})[0], expected)
    assert "ended abnormally" in open(emulated["servers"][0]["log"], encoding="utf-8").read()


def _targets_file(tmp_path, rpc):
    path = tmp_path / "targets.yaml"
    path.write_text("dead:\n  target: {kind: llvm, mtriple: aarch64-linux-gnu, mattr: ['+neon']}\n"
                    f"  cross_compiler: aarch64-linux-gnu-gcc\n  rpc: {rpc}\n")
    return str(path)


def test_unreachable_device_is_a_clear_error_within_the_timeout(device_dir, tmp_path):
    model = ct.Conv1DTranspose(np.ones((3, 2, 2), np.float32), [1, 8, 2], 2,
                               backend="onnxruntime").to_onnx()
    port = devices.free_port()  # nothing listens there
    targets = _targets_file(tmp_path, f"{{host: 127.0.0.1, port: {port}, timeout: 2}}")
    started = time.monotonic()
    with pytest.raises(BackendError, match=rf"cannot reach 127\.0\.0\.1:{port} within 2 s"):
        ct.InferenceSession(model, backend="tvm", target="dead", targets=targets)
    assert time.monotonic() - started < 10

    # A port that accepts but never answers TVM's handshake: the timeout, not a hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        targets = _targets_file(tmp_path, f"{{host: 127.0.0.1, port: {port}, timeout: 2}}")
        started = time.monotonic()
        with pytest.raises(BackendError, match="did not give an RPC session within 2 s"):
            ct.InferenceSession(model, backend="tvm", target="dead", targets=targets)
        assert time.monotonic() - started < 10

    # backend='auto' falls back to onnxruntime and says why.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = ct.InferenceSession(model, backend="auto", target="dead", targets=targets)
    assert session.backend == "onnxruntime:cpu"
    assert any("dead" in str(w.message) for w in caught)

    # An emulated device that is not started names the command that starts it.
    targets = _targets_file(tmp_path, "{emulated: nosuch}")
    with pytest.raises(BackendError, match="device start --emulate arm64 --name nosuch"):
        ct.InferenceSession(model, backend="tvm", target="dead", targets=targets)


def test_fleet_through_tvm_tracker_spreads_sessions(fleet, tmp_path):
    from conv1d_transpose.bench import run_bench

    summary = devices.tracker_summary(f"127.0.0.1:{fleet['port']}")
    assert summary["queue_info"]["arm64-emulated"]["free"] >= 1
    w = find_workload("stream-chunk")
    spec = w.spec("float32")
    x, f = w.arrays("float32")
    ops = [ct.Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding,
                              backend="tvm", target=FLEET_TARGET, name=f"op{i}") for i in range(3)]
    used = {op._session.device for op in ops}
    servers = {f"127.0.0.1:{s['port']}" for s in fleet["servers"]}
    assert used == servers  # two devices, the third op shares one
    results = [None] * 3
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ops[i](x)))
               for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(max_error(y, x, f, spec)[1] for y in results)
    del ops, threads
    document = run_bench([w], [f"tvm:{FLEET_TARGET}", "onnxruntime"], quick=True, progress=False)
    (record,) = [r for r in document["records"] if r["target"] == FLEET_TARGET]
    assert record["status"] == "ok" and record["median_ms"] is None  # checked, never timed
    assert "via tracker" in record["note"] and "not timed" in record["note"]


def test_tune_on_the_device_over_rpc(emulated, tmp_path, monkeypatch, limit_plans):
    """`tune --target arm64-emulated`: candidates cross-compiled here, checked against the
    reference and timed on the device (qemu's times: this checks the path, not a
    number), and a record for the arm64 target that the next build there applies."""
    import gc

    from conv1d_transpose.cli import main
    from conv1d_transpose.compile import records
    from conv1d_transpose.compile.kernels import Geometry
    from conv1d_transpose.compile.targets import get_target
    from conv1d_transpose.graph import make_spec
    from conv1d_transpose.op import _OPS

    _OPS.clear()  # earlier tests' cached ops hold the device's one session
    gc.collect()
    limit_plans(3)
    database = tmp_path / "tuning.json"
    monkeypatch.setenv(records.ENV_DATABASE, str(database))
    layer = ["--width", "12", "--cin", "8", "--cout", "8", "--kernel", "5", "--stride", "3"]
    runner = CliRunner()
    result = runner.invoke(main, ["tune", *layer, "--target", TARGET, "--processes", "1"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "qemu" in result.output  # the note that emulated times mean nothing
    spec = make_spec((1, 12, 8), (5, 8, 8), (1, 36, 8), 3, "SAME", "NWC", 1, "float32")
    target_key = records.target_key(get_target(TARGET).tvm_target())
    assert "mtriple=aarch64-linux-gnu" in target_key
    record = records.RecordStore(database).get(records.workload_key(Geometry.from_spec(spec)),
                                               target_key)
    assert record is not None and record.measured["candidates"] == 3
    assert "emulated" in record.measured["machine"]
    log = open(emulated["servers"][0]["log"], encoding="utf-8").read()
    assert f"conv1d-transpose-tune-{os.getpid()}-3.so" in log  # the search ran there

    model = tmp_path / "m.onnx"
    assert runner.invoke(main, ["export", *layer, "-o", str(model)]).exit_code == 0
    result = runner.invoke(main, ["compile", str(model), "--target", TARGET, "-o",
                                  str(tmp_path / "art")])
    assert result.exit_code == 0 and "schedule: tuned" in result.output, result.output
    x, f = random_arrays(spec.input_shape, spec.filters_shape, "float32")
    y = ct.conv1d_transpose(x, f, spec.output_shape, 3, backend="tvm", target=TARGET)
    error, ok = max_error(y, x, f, spec)
    assert ok, error


def test_arm64_library_has_neon_vector_fma(device_dir):
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if not objdump:
        pytest.skip("aarch64-linux-gnu-objdump not found (binutils-aarch64-linux-gnu)")
    from conv1d_transpose.compile.artifact import compile_model

    w = find_workload("stream-chunk")
    _, f = w.arrays("float32")
    spec = w.spec("float32")
    model = ct.Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding,
                               backend="onnxruntime").to_onnx()
    artifact = compile_model(model, "arm64")
    assert artifact.scheduled
    text = subprocess.run([objdump, "-d", artifact.library_path], capture_output=True,
                          text=True, check=True).stdout
    fma = re.findall(r"\bfmla\s+v\d+\.4s", text)
    assert len(fma) >= 8, "no NEON vector FMA (fmla .4s) in the arm64 kernel"


def test_device_cli_errors_name_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(devices.ENV_DEVICE_DIR, str(tmp_path))
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    result = CliRunner().invoke(device_command, ["start", "--emulate", "arm64", "--name", "x"])
    assert result.exit_code == 2  # as every command's errors (it was 1 before issue 28)
    assert "qemu-user-static binfmt-support mmdebstrap" in result.output, result.output


def test_stop_leaves_no_process_behind(device_dir, emulated, fleet):
    import psutil

    pids = STARTED_PIDS | _session_pids(emulated) | _session_pids(fleet)
    assert len(pids) >= 5  # server + worker, tracker, two fleet servers (+ workers)
    result = CliRunner().invoke(device_command, ["stop"])
    assert result.exit_code == 0 and "arm64" in result.output and "fleet" in result.output
    time.sleep(0.5)
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, [psutil.Process(p).cmdline() for p in alive]
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(device_dir) in part for part in (p.info["cmdline"] or []))]
    assert not leftovers
    assert devices.status() == []
    assert CliRunner().invoke(device_command, ["stop"]).output.strip() == "nothing running"
