"""`conv1d-transpose tune` on a device over TVM RPC (compile/tuning.py, RemoteTarget).

The device here is TVM's own RPC server (`python -m tvm.exec.rpc_server`) on this
machine, run by the module's fixture: the same server a board runs, reached through a
targets.yaml entry with an `rpc:` block, so the path (build here, upload, check against
the reference there, time there, fresh sessions for the final timing, MetaSchedule's
RPCRunner) is the one a real board takes, without qemu. The cross-compiled arm64 path on
the emulated device is in test_device.py.
"""
from __future__ import annotations

import gc
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import conv1d_transpose as ct
from conv1d_transpose.cli import main
from conv1d_transpose.compile import records, tuning
from conv1d_transpose.compile.kernels import Geometry
from conv1d_transpose.compile.targets import get_target
from conv1d_transpose.graph import make_spec, max_error
from conv1d_transpose.graph.errors import BackendError
from models import plant_wrong_plans

pytest.importorskip("tvm")

LAYER = ["--width", "9", "--cin", "16", "--cout", "24", "--kernel", "4", "--stride", "2"]
TARGET = "rpc-host"


def small_spec():
    return make_spec((1, 9, 16), (4, 24, 16), (1, 18, 24), 2, "SAME", "NWC", 1, "float32")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def targets_file(path, port, timeout=10) -> str:
    path.write_text(f"""\
{TARGET}:
  description: this machine's CPU behind TVM's RPC server
  target: {{kind: llvm, mcpu: native}}
  rpc: {{host: 127.0.0.1, port: {port}, timeout: {timeout}}}
""")
    return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """TVM's RPC server on a free local port: {"port", "log", "targets"}."""
    directory = tmp_path_factory.mktemp("rpc-server")
    port = free_port()
    log = directory / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host",
                                    "127.0.0.1", "--port", str(port), "--port-end",
                                    str(port + 1)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"TVM's rpc_server exited: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("TVM's rpc_server did not listen within 60 s")
        yield {"port": port, "log": log,
               "targets": targets_file(directory / "targets.yaml", port)}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def few_plans(limit_plans):
    """The plan search cut to its first four plans: the path is under test here."""
    limit_plans(4)


def sessions_served(server) -> int:
    return server["log"].read_text().count("connected from")


def test_tune_over_rpc_times_on_the_device_and_compiles_apply_the_record(
        server, few_plans, tmp_path, monkeypatch):
    database = tmp_path / "tuning.json"
    monkeypatch.setenv(records.ENV_DATABASE, str(database))
    monkeypatch.setenv("CONV1D_TRANSPOSE_TARGETS", server["targets"])
    before = sessions_served(server)
    runner = CliRunner()
    result = runner.invoke(main, ["tune", *LAYER, "--target", TARGET, "--processes", "2"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"on the device over RPC (127.0.0.1:{server['port']}" in result.output
    # One session for the search, then one per timing process: each is a fresh process
    # on the device (TVM's server forks one per session).
    assert sessions_served(server) - before == 3
    entry = get_target(TARGET)
    spec = small_spec()
    record = records.RecordStore(database).get(records.workload_key(Geometry.from_spec(spec)),
                                               records.target_key(entry.tvm_target()))
    assert record is not None
    assert record.measured["machine"] == f"{TARGET} over RPC at 127.0.0.1:{server['port']}"
    assert record.measured["processes"] == 2 and record.measured["candidates"] == 4
    assert record.measured["max_abs_error"] < 1e-4 and record.measured["generic_ms"] > 0

    # A compile for the target uses the record, and the kernel is right on the device.
    model = tmp_path / "m.onnx"
    assert runner.invoke(main, ["export", *LAYER, "-o", str(model)]).exit_code == 0
    result = runner.invoke(main, ["compile", str(model), "--target", TARGET, "-o",
                                  str(tmp_path / "art")])
    assert result.exit_code == 0 and "schedule: tuned" in result.output, result.output
    rng = np.random.default_rng(3)
    x = rng.standard_normal(spec.input_shape).astype("float32")
    f = rng.standard_normal(spec.filters_shape).astype("float32")
    op = ct.Conv1DTranspose(f, spec.output_shape, spec.stride, backend="tvm", target=TARGET)
    assert op.backend == f"tvm:{TARGET}" and op._session.device == f"127.0.0.1:{server['port']}"
    error, ok = max_error(op(x), x, f, spec)
    assert ok, error
    del op  # hand the device back (the server serves one session at a time)
    gc.collect()


def test_a_wrong_kernel_is_refused_on_the_device(server, few_plans, tmp_path, monkeypatch):
    plant_wrong_plans(monkeypatch)
    entry = get_target(TARGET, server["targets"])
    result = tuning.tune(small_spec(), entry.tvm_target(), database=str(tmp_path / "t.json"),
                         rounds=1, processes=0, remote=tuning.RemoteTarget.from_entry(entry))
    assert len(result.refused) == 3
    assert all("wrong result" in c.problem for c in result.refused)
    assert result.record.schedule == {"kind": "generic"}


def test_an_unreachable_device_is_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    targets = targets_file(tmp_path / "targets.yaml", port, timeout=2)
    result = CliRunner().invoke(main, ["tune", *LAYER, "--targets", targets, "--target",
                                       TARGET, "--database", str(tmp_path / "t.json")])
    assert result.exit_code != 0
    assert f"cannot reach 127.0.0.1:{port} within 2 s" in result.output, result.output
    assert not (tmp_path / "t.json").exists()
    entry = get_target(TARGET, targets)
    with pytest.raises(BackendError, match=f"127.0.0.1:{port}"):
        tuning.tune(small_spec(), entry.tvm_target(), database=str(tmp_path / "t.json"),
                    remote=tuning.RemoteTarget.from_entry(entry))


@pytest.mark.slow
def test_metaschedule_over_rpc_uses_the_rpc_runner(server, few_plans, tmp_path):
    """A few MetaSchedule trials measured by TVM's RPCRunner on the device (a direct
    server: our session factory stands in for its tracker), their best traces checked
    against the reference there. (Slow: MetaSchedule's pools take minutes on 2 cores.)
    The final timing runs in this process (processes=0): the plans' builds were dropped
    to free the device for the runner, so the finalists are built there again."""
    entry = get_target(TARGET, server["targets"])
    before = sessions_served(server)
    result = tuning.tune(small_spec(), entry.tvm_target(), trials=4,
                         database=str(tmp_path / "t.json"), rounds=1, processes=0,
                         remote=tuning.RemoteTarget.from_entry(entry))
    assert not [c for c in result.refused if c.name == "metaschedule"], \
        [c.problem for c in result.refused]
    tuned = [c for c in result.candidates if c.name.startswith("metaschedule")]
    assert tuned and all(c.error is not None and c.error < 1e-4 for c in tuned)
    # The runner opened a session per measured trial, besides the search's and the one
    # that checks MetaSchedule's best and times the finalists.
    assert sessions_served(server) - before >= 4 + 2
    assert all(c.ms > 0 for c in result.candidates if c.times)
    assert result.record.measured["metaschedule_trials"] == 4


def test_a_dropped_op_hands_the_device_back_at_once(server):
    """An op holds its device's one session; dropping it must free the session without
    waiting for a garbage collection (it once kept itself alive through a bound method)."""
    from conv1d_transpose.compile.remote import connect

    filters = np.ones((4, 8, 8), np.float32)
    ct.Conv1DTranspose(filters, [1, 32, 8], 2, backend="tvm")  # imports done, cache warm
    gc.collect()
    gc.disable()
    try:
        op = ct.Conv1DTranspose(filters, [1, 32, 8], 2, backend="tvm", target=TARGET,
                                targets=server["targets"])
        assert op(np.ones((1, 16, 8), np.float32)).shape == (1, 32, 8)
        del op
        session, _ = connect({"host": "127.0.0.1", "port": server["port"], "timeout": 5})
        del session
    finally:
        gc.enable()
        gc.collect()


def test_a_candidate_that_fails_on_the_device_is_refused(server, few_plans, tmp_path,
                                                         monkeypatch):
    """A library the device cannot load (here: a plan's upload replaced by bytes that are
    no library) is refused with the device's reason; the search goes on afresh."""
    real_load = tuning._Remote.load
    calls = {"n": 0}

    def load(self, executable):
        calls["n"] += 1
        if calls["n"] == 2:  # the first plan after the generic one
            name = f"not-a-library-{calls['n']}.so"
            path = tmp_path / name
            path.write_bytes(b"\x7fELF but not really")
            self.device  # noqa: B018 (connects)
            self.session.upload(str(path), name)
            return self.session.load_module(name), self.device
        return real_load(self, executable)

    monkeypatch.setattr(tuning._Remote, "load", load)
    entry = get_target(TARGET, server["targets"])
    result = tuning.tune(small_spec(), entry.tvm_target(), database=str(tmp_path / "t.json"),
                         rounds=1, processes=0, remote=tuning.RemoteTarget.from_entry(entry))
    (refused,) = result.refused
    assert refused.name == "plan 1" and refused.problem.startswith("failed on the device")
    assert len(result.candidates) == 3  # the generic schedule and the two other plans
