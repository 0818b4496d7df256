"""Emulated edge devices: an aarch64 TVM RPC server under qemu-user, and fleets of them.

    conv1d-transpose device start --emulate arm64 [--port P] [--name NAME]
    conv1d-transpose device start --emulate arm64 --fleet 2 [--key KEY]   # + TVM's tracker
    conv1d-transpose device status
    conv1d-transpose device stop [NAME ...]

A device is TVM's own RPC server (`python -m tvm.exec.rpc_server`) running inside an
arm64 Debian root filesystem, executed by qemu-user through binfmt_misc:
the same server a Raspberry Pi or a Jetson runs, so the host side (`runtime/rpc_backend.py`)
is the code path of a real board. (It is started through a small launcher, LAUNCHER below,
that changes one thing: a session whose process crashes ends that session, not the
server's listen loop.) A fleet is N such servers registered under one key with
TVM's RPC tracker (`python -m tvm.exec.rpc_tracker`, run from the device image,
which has the tornado it needs).

Files live under `device_dir()` ($CONV1D_TRANSPOSE_DEVICE_DIR, else `<cache dir>/devices`):

    images/arm64/       the root filesystem (mmdebstrap --variant=extract, TVM runtime wheels)
    run/NAME.json       a started device or fleet: processes (PID + start time), ports, key
    logs/NAME*.log      the servers' output

Everything binds to 127.0.0.1; ports are chosen free unless given; `start` on a running
name returns it unchanged, `stop` on a stopped one does nothing. Stopping kills each
recorded process's whole session (the server forks a worker and one process per
connection), by PID, and waits until they are gone.

Emulation is ~10-15x slower than the real CPU: use it for correctness, never for timings.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata

# The record of started devices lives in compile/ (targets.yaml's `emulated:` reads it);
# ENV_DEVICE_DIR, resolve and running are this module's public names too.
from .compile.devices import (DEFAULT_FLEET_NAME, DEFAULT_NAME, ENV_DEVICE_DIR,  # noqa: F401
                              DeviceError, device_dir, listening, process_alive,
                              process_children, read_json, recorded_processes, resolve,
                              running, state_healthy, state_path)
from .compile.remote import tracker_free, tracker_summary  # noqa: F401 (public here too)

LOOPBACK = "127.0.0.1"
DEFAULT_FLEET_KEY = "arm64-emulated"
DEBIAN_SUITE = "bookworm"  # python3 3.11: the cp311 wheels
DEVICE_PYTHON = "3.11"
# Bump when the image recipe changes: an older image is rebuilt.
IMAGE_VERSION = 2
START_TIMEOUT = 90.0

EMULATIONS = {
    "arm64": {"debian_arch": "arm64", "binfmt": "qemu-aarch64", "qemu": "qemu-aarch64-static",
              "wheel_platform": "manylinux_2_28_aarch64"},
}
APT_LINE = "apt-get install -y qemu-user-static binfmt-support mmdebstrap"


# --- where things are -------------------------------------------------------------------

def _subdir(*parts) -> str:
    path = os.path.join(device_dir(), *parts)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def _lock(name: str):
    with open(os.path.join(_subdir("run"), f".{name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- host requirements --------------------------------------------------------------------

def missing_requirements(emulate: str = "arm64") -> str | None:
    """Why this machine cannot run an emulated `emulate` device, or None when it can
    (after `ensure_binfmt`). Checks tools and root; does not change anything."""
    info = _emulation(emulate)
    if not sys.platform.startswith("linux"):
        return "emulated devices need Linux (qemu-user and binfmt_misc)"
    tools = [tool for tool in ("mmdebstrap", info["qemu"], "update-binfmts", "chroot")
             if not shutil.which(tool)]
    if tools:
        return (f"{', '.join(tools)} not found: install them as root with "
                f"`{APT_LINE}` (Debian/Ubuntu)")
    if os.geteuid() != 0:
        return ("emulated devices need root (to register qemu with binfmt_misc and to chroot "
                "into the device's root filesystem); run as root, or use a real board")
    return None


def ensure_binfmt(emulate: str = "arm64") -> None:
    """Make the kernel run `emulate` binaries with qemu (mounts binfmt_misc if needed)."""
    info = _emulation(emulate)
    entry = f"/proc/sys/fs/binfmt_misc/{info['binfmt']}"
    if _binfmt_enabled(entry):
        return
    steps = []
    if not os.path.exists("/proc/sys/fs/binfmt_misc/register"):
        steps.append(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    steps.append(["update-binfmts", "--enable", info["binfmt"]])
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0 and step[0] == "mount":
            raise DeviceError(f"cannot mount binfmt_misc (`{' '.join(step)}` failed: "
                              f"{(result.stderr or result.stdout).strip()}); a container "
                              f"needs it mounted by its host, or privileges to mount it")
    if not _binfmt_enabled(entry):
        raise DeviceError(f"qemu is not registered with binfmt_misc ({entry} missing or "
                          f"disabled after `update-binfmts --enable {info['binfmt']}`); is "
                          f"qemu-user-static installed? `{APT_LINE}`")


def _binfmt_enabled(entry: str) -> bool:
    try:
        with open(entry, encoding="utf-8") as file:
            return file.readline().strip() == "enabled"
    except OSError:
        return False


def _emulation(emulate: str) -> dict:
    if emulate not in EMULATIONS:
        raise DeviceError(f"emulate={emulate!r} is not supported; allowed: "
                          f"{', '.join(EMULATIONS)}")
    return EMULATIONS[emulate]


# --- the device image ---------------------------------------------------------------------

def _image_recipe(emulate: str) -> dict:
    return {"version": IMAGE_VERSION, "emulate": emulate, "suite": DEBIAN_SUITE,
            "python": DEVICE_PYTHON,
            "apache-tvm": metadata.version("apache-tvm"),
            "apache-tvm-ffi": metadata.version("apache-tvm-ffi")}


def image_path(emulate: str = "arm64") -> str:
    return os.path.join(device_dir(), "images", emulate)


def ensure_image(emulate: str = "arm64", log=None) -> str:
    """The device's root filesystem, built once (~30 s) and reused while its recipe holds.

    Nothing emulated runs while building: mmdebstrap only extracts packages, pip installs
    the aarch64 wheels of the host's TVM version from the host, and the host's Python
    byte-compiles them (same 3.11 bytecode).
    """
    info = _emulation(emulate)
    recipe = _image_recipe(emulate)
    root = image_path(emulate)
    stamp = os.path.join(root, ".conv1d-transpose-image.json")
    with _lock(f"image-{emulate}"):
        if read_json(stamp) == recipe:
            return root
        users = [name for name, state in states().items()
                 if state.get("image") == root and state_healthy(state)]
        if users and os.path.exists(root):
            raise DeviceError(f"the {emulate} device image must be rebuilt (TVM or the recipe "
                              f"changed) but devices {users} run from it: stop them first")
        log = log or (lambda message: None)
        log(f"building the {emulate} device image in {root} (once, ~30 s)")
        parent = _subdir("images")
        temp = tempfile.mkdtemp(prefix=f".{emulate}-", dir=parent)
        try:
            _run([
                "mmdebstrap", "--quiet", "--variant=extract", f"--arch={info['debian_arch']}",
                "--include=python3,libstdc++6", DEBIAN_SUITE, temp],
                "mmdebstrap (the device's Debian root filesystem; needs Debian's apt mirror)")
            site = os.path.join(temp, "opt", "tvm-site")
            _run([
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-warn-script-location", "--only-binary=:all:",
                "--platform", info["wheel_platform"], "--python-version", DEVICE_PYTHON,
                "--implementation", "cp", "--abi", "cp" + DEVICE_PYTHON.replace(".", ""),
                "--target", site, f"apache-tvm=={recipe['apache-tvm']}",
                f"apache-tvm-ffi=={recipe['apache-tvm-ffi']}", "psutil", "cloudpickle",
                "tornado"],
                "pip (the device's TVM runtime wheels; needs PyPI)")
            # The device needs only the runtime: the compiler library is half the size.
            for name in ("libtvm_compiler.so",):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(site, "tvm", "lib", name))
            # The environment may set PYTHONDONTWRITEBYTECODE: an uncompiled tree imports
            # twice as slowly under emulation, so compile it here (errors in test files are
            # expected and harmless).
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", site,
                            os.path.join(temp, "usr", "lib", f"python{DEVICE_PYTHON}")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(temp, os.path.basename(stamp)), "w", encoding="utf-8") as f:
                json.dump(recipe, f)
            os.chmod(temp, 0o755)
            if os.path.exists(root):
                shutil.rmtree(root)
            os.rename(temp, root)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return root


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise DeviceError(f"building the device image failed in {what}: `{command[0]}` "
                          f"exited {result.returncode}:\n{tail}")


# --- processes ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _spawn(command: list[str], env: dict, log_path: str) -> dict:
    import psutil

    with open(log_path, "ab") as log:
        # A session of its own: the server's forked worker and per-connection processes
        # stay in it, and stop() can find them all from this PID.
        try:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       close_fds=True)
        except OSError as error:
            raise DeviceError(f"cannot start `{' '.join(command[:4])} ...`: {error}") from None
    return {"pid": process.pid, "create_time": psutil.Process(process.pid).create_time(),
            "command": list(command)}


def _terminate(records: list[dict], timeout: float = 10.0) -> list[int]:
    """Stop the recorded processes and everything in their sessions; the PIDs left alive."""
    import psutil

    victims = {}
    for record in records:
        process = process_alive(record)
        if process is None:
            continue
        victims[process.pid] = process
        for child in process_children(process):
            victims[child.pid] = child
        with contextlib.suppress(psutil.Error):
            # Processes of the session the process leads (forks that lost their parent).
            sid = os.getsid(process.pid)
            if sid == process.pid:
                for other in psutil.process_iter():
                    with contextlib.suppress(psutil.Error, OSError):
                        if os.getsid(other.pid) == sid:
                            victims[other.pid] = other
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for process in victims.values():
            with contextlib.suppress(psutil.Error):
                process.send_signal(signum)
        _, alive = psutil.wait_procs(list(victims.values()), timeout=timeout / 2)
        victims = {p.pid: p for p in alive}
        if not victims:
            break
    return sorted(victims)


def _write_state(name: str, state: dict) -> None:
    path = state_path(name)
    _subdir("run")
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as file:
        json.dump(state, file, indent=2)
    os.replace(temp, path)


def _device_command(root: str, module: str, port: int) -> list[str]:
    return [shutil.which("chroot") or "/usr/sbin/chroot", root, "/usr/bin/python3", "-m",
            module, "--host", LOOPBACK, "--port", str(port), "--port-end", str(port + 1)]


def _server_command(root: str, port: int, tracker: str | None, key: str | None) -> list[str]:
    launcher = _install_launcher(root)
    command = [shutil.which("chroot") or "/usr/sbin/chroot", root, "/usr/bin/python3",
               launcher, "--host", LOOPBACK, "--port", str(port), "--port-end", str(port + 1)]
    if tracker:
        command += ["--tracker", tracker, "--key", key]
    return command


# TVM's rpc_server, with one change: a session whose process dies (a signal, e.g. a
# library that segfaults) ends that session only. TVM's own `_serving` raises
# RuntimeError on a non-zero exit of the session's process, which ends its listen loop:
# the server then keeps its socket but never accepts again (a dead device that still
# looks listening). Everything else is `python -m tvm.exec.rpc_server`.
LAUNCHER_PATH = "/opt/conv1d-transpose/rpc_server.py"
LAUNCHER = '''"""TVM's RPC server that survives a crashed session (written by conv1d-transpose)."""
import argparse
import logging


def _survive_crashed_sessions():
    import os
    import shutil
    import tempfile

    from tvm.rpc import server

    serving = server._serving

    def _serving_that_survives(sock, addr, opts, load_library):
        old_cwd = os.getcwd()
        try:
            serving(sock, addr, opts, load_library)
        except RuntimeError as error:  # the session's process exited with a signal/error
            server.logger.error("session from %s ended abnormally (%s); still serving",
                                addr, error)
            work = os.getcwd()
            os.chdir(old_cwd)
            if work != old_cwd and work.startswith(tempfile.gettempdir()):
                shutil.rmtree(work, ignore_errors=True)
            sock.close()

    server._serving = _serving_that_survives


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--port-end", type=int, default=9199)
    parser.add_argument("--tracker")
    parser.add_argument("--key", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    from tvm import rpc

    tracker = None
    if args.tracker:
        url, port = args.tracker.rsplit(":", 1)
        tracker = (url, int(port))
    server = rpc.Server(args.host, args.port, args.port_end, key=args.key,
                        tracker_addr=tracker, server_init_callback=_survive_crashed_sessions)
    server.proc.join()


if __name__ == "__main__":
    main()
'''


def _install_launcher(root: str) -> str:
    """Write LAUNCHER into the image (atomically, only when it differs); its path there."""
    path = os.path.join(root, LAUNCHER_PATH.lstrip("/"))
    if _read_text(path) != LAUNCHER:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        temp = f"{path}.{os.getpid()}.tmp"
        with open(temp, "w", encoding="utf-8") as file:
            file.write(LAUNCHER)
        os.replace(temp, path)
    return LAUNCHER_PATH


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError:
        return None


def _server_env() -> dict:
    # TVM_USE_RUNTIME_LIB: load libtvm_runtime only (the image has no compiler); it breaks
    # `from tvm import relax` on the device, which the server does not need.
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
            "PYTHONPATH": "/opt/tvm-site", "TVM_USE_RUNTIME_LIB": "1",
            "TVM_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _wait_port(record: dict, log_path: str, deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        if process_alive(record) is None:
            raise DeviceError(f"{what} exited while starting; its log ({log_path}) ends:\n"
                              f"{_log_tail(log_path)}")
        if listening(record):
            return
        time.sleep(0.2)
    raise DeviceError(f"{what} did not listen on {LOOPBACK}:{record['port']} within "
                      f"{START_TIMEOUT:.0f} s; its log ({log_path}) ends:\n{_log_tail(log_path)}")


def _log_tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return "\n".join(file.read().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _check_name(name: str) -> str:
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise DeviceError(f"device name {name!r} must be letters, digits, '-', '_' or '.'")
    return name


# --- the API ----------------------------------------------------------------------------------

def start(emulate: str = "arm64", *, port: int | None = None, name: str | None = None,
          fleet: int | None = None, key: str | None = None, log=None) -> dict:
    """Start an emulated device (or, with `fleet=N`, TVM's tracker and N devices under
    `key`); returns its state. Idempotent: a running `name` is returned as it is.

    Args:
      emulate: 'arm64'.
      port: the device's (fleet: the tracker's) port on 127.0.0.1; default a free one.
      name: default 'arm64' for one device, 'fleet' for a fleet.
      fleet: number of devices registered with a tracker (None: one device, no tracker).
      key: the tracker key of a fleet's devices (default 'arm64-emulated').
      log: a callable for progress lines.
    Raises:
      DeviceError (a BackendError, a ValueError): what to install, root needed, a busy
      port, a server that exits (with its log), a name already used differently.
    """
    if fleet is not None and (isinstance(fleet, bool) or not isinstance(fleet, int)
                              or fleet < 1):
        raise DeviceError(f"fleet={fleet!r} must be a positive number of devices")
    if key is not None and fleet is None:
        raise DeviceError("key is for a fleet (give fleet=N): a single device has no tracker")
    name = _check_name(name or (DEFAULT_FLEET_NAME if fleet else DEFAULT_NAME))
    key = key or (DEFAULT_FLEET_KEY if fleet else None)
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 < port < 65536):
        raise DeviceError(f"port={port!r} must be an integer 1..65535")
    _emulation(emulate)
    with _lock(name):
        existing = read_json(state_path(name))
        if existing is not None:
            if state_healthy(existing):
                wanted = {"emulate": emulate, "fleet": fleet, "key": key}
                have = {k: existing.get(k) for k in wanted}
                if have != wanted or (port is not None and port != existing["port"]):
                    raise DeviceError(
                        f"device {name!r} is already running with {have} on port "
                        f"{existing['port']}; stop it first (conv1d-transpose device stop "
                        f"{name}) or choose another name")
                return existing
            _stop_state(name, existing)  # stale: some process died; start afresh
        reason = missing_requirements(emulate)
        if reason:
            raise DeviceError(f"cannot start an emulated {emulate} device: {reason}")
        ensure_binfmt(emulate)
        root = ensure_image(emulate, log)
        logs = _subdir("logs")
        state = {"name": name, "emulate": emulate, "fleet": fleet, "key": key,
                 "host": LOOPBACK, "port": None, "image": root, "tracker": None,
                 "servers": [], "started_at": time.time()}
        deadline = time.monotonic() + START_TIMEOUT
        try:
            tracker_addr = None
            if fleet:
                tracker_port = port or free_port()
                _refuse_busy(tracker_port)
                log_path = os.path.join(logs, f"{name}-tracker.log")
                # TVM's tracker needs tornado, which the host need not have: the image does.
                record = _spawn(_device_command(root, "tvm.exec.rpc_tracker", tracker_port),
                                _server_env(), log_path)
                record.update(port=tracker_port, log=log_path, role="tracker")
                state["tracker"], state["port"] = record, tracker_port
                _write_state(name, state)
                _wait_port(record, log_path, deadline, "TVM's RPC tracker")
                tracker_addr = f"{LOOPBACK}:{tracker_port}"
            for index in range(fleet or 1):
                server_port = port if (port and not fleet) else free_port()
                _refuse_busy(server_port)
                label = f"{name}-{index + 1}" if fleet else name
                log_path = os.path.join(logs, f"{label}.log")
                record = _spawn(_server_command(root, server_port, tracker_addr, key),
                                _server_env(), log_path)
                record.update(port=server_port, log=log_path, role="server")
                state["servers"].append(record)
                if not fleet:
                    state["port"] = server_port
                _write_state(name, state)
            for index, record in enumerate(state["servers"]):
                _wait_port(record, record["log"], deadline,
                           f"the emulated {emulate} RPC server {index + 1}")
            if fleet:
                _wait_registered(tracker_addr, key, fleet, deadline)
        except BaseException:
            _stop_state(name, state)
            raise
        if log:
            log(f"device {name!r} ready: {describe(state)}")
        return state


def _refuse_busy(port: int) -> None:
    if port_answers(LOOPBACK, port, timeout=0.3):
        raise DeviceError(f"port {port} on {LOOPBACK} is already in use; choose another "
                          f"(--port) or leave it out for a free one")


def _wait_registered(tracker_addr: str, key: str, count: int, deadline: float) -> None:
    free = 0
    while time.monotonic() < deadline:
        free = tracker_free(tracker_addr, key)
        if free >= count:
            return
        time.sleep(0.3)
    raise DeviceError(f"only {free} of {count} devices registered with the tracker at "
                      f"{tracker_addr} under key {key!r} within {START_TIMEOUT:.0f} s")


def stop(names=None) -> list[str]:
    """Stop the named devices/fleets (default: all); returns the names stopped.
    Raises DeviceError if a process refuses to die."""
    stopped = []
    for name in names or list(states()):
        with _lock(_check_name(name)):
            state = read_json(state_path(name))
            if state is None:
                continue
            _stop_state(name, state)
            stopped.append(name)
    return stopped


def _stop_state(name: str, state: dict) -> None:
    # Servers first, then the tracker they report to.
    records = list(state.get("servers", [])) + ([state["tracker"]] if state.get("tracker")
                                                else [])
    left = _terminate(records)
    if left:
        raise DeviceError(f"device {name!r}: processes {left} did not exit after SIGKILL")
    with contextlib.suppress(FileNotFoundError):
        os.remove(state_path(name))


def states() -> dict[str, dict]:
    """name -> recorded state of every started device/fleet (running or not)."""
    run = os.path.join(device_dir(), "run")
    result = {}
    if os.path.isdir(run):
        for entry in sorted(os.listdir(run)):
            if entry.endswith(".json"):
                state = read_json(os.path.join(run, entry))
                if isinstance(state, dict):
                    result[entry[:-5]] = state
    return result


def status() -> list[dict]:
    """One row per started device/fleet: name, kind, address, key, healthy, pids."""
    rows = []
    for name, state in states().items():
        rows.append({"name": name, "emulate": state.get("emulate"),
                     "kind": "fleet" if state.get("fleet") else "device",
                     "address": f"{state.get('host')}:{state.get('port')}",
                     "key": state.get("key"), "devices": len(state.get("servers", [])),
                     "running": state_healthy(state),
                     "pids": [record["pid"] for record in recorded_processes(state)]})
    return rows


def describe(state: dict) -> str:
    if state.get("fleet"):
        return (f"TVM tracker at {state['host']}:{state['port']}, {len(state['servers'])} "
                f"emulated {state['emulate']} devices under key {state['key']!r}")
    return f"TVM RPC server at {state['host']}:{state['port']} (emulated {state['emulate']})"
