"""The record of started devices: where it lives, whether a device runs, its RPC endpoint.

`conv1d-transpose device start` (conv1d_transpose/device.py) starts emulated devices and
records their processes here; targets.yaml's `rpc: {emulated: NAME}` is resolved from
this record when a target is used. Under compile/ because targets (compile/targets.py)
read it and compile/ must not import the front (DESIGN's stage rules,
tests/test_layering.py).
"""
from __future__ import annotations

import contextlib
import json
import os

from ..graph.errors import BackendError

ENV_DEVICE_DIR = "CONV1D_TRANSPOSE_DEVICE_DIR"
DEFAULT_NAME = "arm64"
DEFAULT_FLEET_NAME = "fleet"


class DeviceError(BackendError):
    """An emulated device cannot be set up, started or reached (the message says why)."""

def device_dir() -> str:
    """$CONV1D_TRANSPOSE_DEVICE_DIR, else `<artifact cache dir>/devices`."""
    env = os.environ.get(ENV_DEVICE_DIR)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    from .cache import default_cache_dir
    return os.path.join(default_cache_dir(), "devices")

def state_path(name: str) -> str:
    return os.path.join(device_dir(), "run", f"{name}.json")

def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None

def process_alive(record: dict):
    """The psutil.Process of a recorded process if it is still that process, else None."""
    import psutil

    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["create_time"]) > 0.5:
            return None  # the PID was reused by something else
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return None

def process_children(process):
    import psutil

    with contextlib.suppress(psutil.Error):
        return process.children(recursive=True)
    return []

def recorded_processes(state: dict) -> list[dict]:
    records = [state["tracker"]] if state.get("tracker") else []
    return records + [server for server in state.get("servers", [])]

def state_healthy(state: dict) -> bool:
    return all(listening(record) for record in recorded_processes(state))

def listening(record: dict) -> bool:
    """The recorded process is alive and listens on its port. Asked of the kernel, not by
    connecting: a TVM RPC server accepts one connection at a time with a backlog of one, so
    probes would queue behind a running session (and slow the emulated server down)."""
    import psutil

    process = process_alive(record)
    if process is None:
        return False
    # TVM's server listens in the worker process it starts (tvm.exec.popen_worker).
    for member in [process, *process_children(process)]:
        with contextlib.suppress(psutil.Error):
            for connection in member.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN and \
                        connection.laddr.port == record["port"]:
                    return True
    return False

def running(name: str) -> bool:
    """Whether the device or fleet `name` is started and all its processes listen."""
    state = read_json(state_path(name))
    return state is not None and state_healthy(state)

def resolve(name: str) -> dict:
    """The rpc endpoint of a running device or fleet, for targets.yaml's `rpc: {emulated:}`:
    {"host", "port"} or {"tracker": "host:port", "key"}.

    Raises:
      DeviceError naming the command that starts it.
    """
    state = read_json(state_path(name))
    if state is None:
        fleet = " --fleet 2" if name == DEFAULT_FLEET_NAME else ""
        named = "" if name in (DEFAULT_NAME, DEFAULT_FLEET_NAME) else f" --name {name}"
        raise DeviceError(f"emulated device {name!r} is not running (start it: "
                          f"conv1d-transpose device start --emulate arm64{fleet}{named})")
    if state.get("fleet"):
        return {"tracker": f"{state['host']}:{state['port']}", "key": state["key"],
                "emulated": name}
    return {"host": state["host"], "port": state["port"], "emulated": name}
