"""`RPCSession`: a TVM artifact run on a remote device over TVM RPC, with onnxruntime's surface.

    session = RPCSession(model, "arm64-emulated")     # a target with an `rpc:` block
    [y] = session.run(None, {"input": x})

The constructor builds (or takes from the cache) the target's artifact here, connects to
the device (a TVM RPC server directly, or one handed out by TVM's RPC tracker for a key),
uploads the verified library, loads it there and makes a Relax VM on the device's CPU.
`run` copies the inputs to the device, calls `main` there and fetches the outputs. This is
the code path of a real board (a Raspberry Pi or Jetson running `python -m
tvm.exec.rpc_server`) and of the emulated device (`conv1d-transpose device start`).

Connecting never hangs: nothing answering, a server that does not complete TVM's
handshake, or a tracker with no free device for the key within the target's `timeout`
raise a BackendError that names the address and the timeout.
"""
from __future__ import annotations

import re
import threading
import warnings

import numpy as np

from ..compile.loader import Artifact, artifact_problem
from ..compile.remote import connect, tracker_free
from ..compile.targets import get_target, rpc_endpoint
from ..graph.errors import ArgumentError, BackendError
from .loading import NodeArg, artifact_for, check_feeds, io_signature


class RPCSession:
    """Runs one ONNX model through a TVM artifact on a remote device (TVM RPC).

    Args:
      model_or_artifact: an onnx.ModelProto, a path to an .onnx file, or an artifact
        directory built for the target's TVM target.
      target: a target name in targets.yaml whose entry has an `rpc:` block.
      targets: a mapping from `load_targets` or a path to a targets.yaml.
      cache_dir: the artifact cache (default: the user cache directory).
      threads: ignored (the device's TVM runtime sizes its own pool); accepted so that
        the session takes TVMSession's arguments.
    Attributes:
      backend ('tvm:<target>'), target, scheduled, artifact, device (the server's
      'host:port' that runs it), endpoint (the resolved rpc block), emulated (True on an
      emulated device: its per-call times are qemu's, ~10-15x off and noisy; never
      present them as a performance number).
    Sessions of one process share one connection per device (a TVM RPC server serves one
    connection at a time); through a tracker, new sessions take another free device.
    Raises:
      BackendError (a ValueError): the target cannot be built here, the device does not
      answer within the timeout, or the library does not load there.
    """

    def __init__(self, model_or_artifact, target, *, targets=None, cache_dir=None,
                 threads=None):
        entry = get_target(target, targets)
        if not entry.rpc:
            raise ArgumentError(f"target {entry.name!r} has no 'rpc' block in {entry.source}; "
                                f"RPCSession runs only targets on a remote device")
        if entry.family != "cpu":
            raise BackendError(f"target {entry.name!r}: running {entry.family} targets over "
                               f"RPC is not supported yet (CPU targets only)")
        self.target = entry.name
        self.backend = f"tvm:{entry.name}"
        self.threads = None
        self.endpoint = rpc_endpoint(entry.rpc)  # BackendError if an emulated one is not up
        # True on an emulated device: its timings mean nothing (correctness only).
        self.emulated = "emulated" in self.endpoint
        self.artifact: Artifact = artifact_for(model_or_artifact, entry, targets, cache_dir)
        self.scheduled = self.artifact.scheduled
        problem = artifact_problem(self.artifact.path)
        if problem:
            raise BackendError(f"artifact {self.artifact.path}: {problem}; refusing to "
                               f"upload it")

        import tvm
        from tvm import relax

        # The bytes checked against the manifest are the bytes uploaded (no re-read).
        library = self.artifact.verified_library_bytes()
        for attempt in (1, 2):
            self._connection = _POOL.get(self.endpoint, what=f"target {entry.name!r}")
            self._remote, self.device = self._connection.remote, self._connection.device
            self._lock = self._connection.lock
            reused = self._connection.used
            try:
                module = self._connection.load(library,
                                               self.artifact.manifest["library_sha256"])
                with self._lock:
                    self._device = self._remote.cpu(0)
                    self._vm = relax.VirtualMachine(module, self._device)
                    self._main = self._vm["main"]
                    # The weights go to the device once per session, not once per call.
                    self._params = [tvm.runtime.tensor(array, self._device)
                                    for array in self.artifact.load_params()]
                break
            except Exception as error:  # TVM raises its own errors from the device
                self._connection.failed(error)
                if attempt == 1 and reused and self._connection.broken:
                    # A held connection whose device session had ended (the device was
                    # restarted, or an earlier session crashed it): once more, afresh.
                    warnings.warn(f"target {entry.name!r}: the RPC session to {self.device} "
                                  f"had ended ({self._connection.broken}); retrying once on "
                                  f"a new connection", RuntimeWarning, stacklevel=2)
                    continue
                raise BackendError(f"target {entry.name!r}: the device at {self.device} "
                                   f"could not load {self.artifact.library_path}: "
                                   f"{_last_line(error)}{self._connection.crash_note()}"
                                   ) from None
        self._tensor = tvm.runtime.tensor
        self._inputs, self._outputs, self._input_dtypes, self._output_index = \
            io_signature(self.artifact)

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names, feeds) -> list[np.ndarray]:
        """Outputs named by `output_names` (None: all), for `feeds` keyed by input name."""
        check_feeds(feeds, self._inputs)
        if output_names is not None:
            for name in output_names:
                if name not in self._output_index:
                    raise ArgumentError(f"output {name!r} is not an output of the model; "
                                        f"outputs: {list(self._output_index)}")
        arrays = [self._checked(feeds[arg.name], arg, dtype)
                  for arg, dtype in zip(self._inputs, self._input_dtypes)]
        with self._lock:  # one RPC connection carries one call at a time
            if self._connection.broken:
                raise BackendError(f"target {self.target!r}: the RPC session to {self.device} "
                                   f"is gone ({self._connection.broken})"
                                   f"{self._connection.crash_note()}; open a new session")
            try:
                arguments = [self._tensor(array, self._device) for array in arrays]
                result = self._main(*arguments, *self._params)
                values = list(result) if len(self._outputs) > 1 else [result]
                if output_names is None:
                    return [value.numpy() for value in values]
                return [values[self._output_index[name]].numpy() for name in output_names]
            except Exception as error:  # TVM raises its own errors from the device
                self._connection.failed(error)
                if not self._connection.broken:
                    raise
                raise BackendError(f"target {self.target!r}: the device at {self.device} "
                                   f"failed running {self.artifact.path}: {_last_line(error)}"
                                   f"{self._connection.crash_note()}") from None

    def _checked(self, value, arg: NodeArg, dtype: np.dtype) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype != dtype:
            raise ArgumentError(f"input {arg.name!r} has dtype {array.dtype}; the model takes "
                                f"{dtype.name} ({arg.type})")
        if array.ndim != len(arg.shape) or any(isinstance(d, int) and d != n
                                               for d, n in zip(arg.shape, array.shape)):
            raise ArgumentError(f"input {arg.name!r} has shape {tuple(array.shape)}; the model "
                                f"takes {arg.shape}")
        return np.ascontiguousarray(array)

    def close(self) -> None:
        """Drop the remote session now (the device is freed, for a tracker's next request)."""
        for attribute in ("_main", "_params", "_vm", "_device", "_remote", "_connection"):
            self.__dict__.pop(attribute, None)


class _Connection:
    """One RPC session to one device, shared by the RPCSessions of this process that run
    there (TVM's RPC server serves one connection at a time); closed when the last of
    them is gone, which frees the device for a tracker's next request.

    A library is uploaded and loaded once per connection (by sha256) and its module is
    shared. A file the server has dlopen'ed is never written again: TVM's server writes
    an upload over the same path (truncate + write), and truncating a mapped library
    makes the kernel drop the process's private, already relocated pages of it (the
    relocated .dynamic/GOT), so the next dlsym in it reads unrelocated pointers and the
    server process segfaults -- even when the bytes written are identical. Every upload
    therefore also gets a name never used before in the connection.
    """

    def __init__(self, remote, device: str):
        self.remote, self.device = remote, device
        self.lock = threading.RLock()
        self.modules: dict[str, object] = {}  # library sha256 -> module loaded there
        self.uploads = 0
        self.broken: str | None = None  # why the connection is unusable (device crashed)
        self.used = False  # a session has loaded a library through it

    def load(self, library: bytes, sha256: str):
        """The remote module of `library` (uploaded and loaded at most once here)."""
        with self.lock:
            if self.broken:
                raise BackendError(f"the RPC session to {self.device} is gone: {self.broken}")
            module = self.modules.get(sha256)
            if module is None:
                self.uploads += 1
                name = f"conv1d-transpose-{sha256[:16]}-{self.uploads}.so"
                self.remote.upload(bytearray(library), name)
                module = self.remote.load_module(name)
                self.modules[sha256] = module
            self.used = True
            return module

    def failed(self, error: BaseException) -> None:
        """Note an error from the device; a lost session marks the connection broken so
        that the pool opens a fresh one for the next session."""
        if _LOST_SESSION.search(str(error)):
            self.broken = _last_line(error)
            self.modules.clear()

    def crash_note(self) -> str:
        if not self.broken:
            return ""
        return (f" (the device's RPC session ended: its server process crashed or was "
                f"stopped; see the device's log, `conv1d-transpose device status`)")


# What TVM says when the remote side of a session went away mid-call.
# (RPCCode 1 is kShutdown: the remote process ended; later calls on the session say so.)
_LOST_SESSION = re.compile(r"code=(kShutdown|1)\b|Socket closed|[Cc]onnection reset|"
                           r"Broken pipe|RPCSessionTimeoutError|SocketError")


def _last_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else repr(error)


class _Pool:
    """Connections by endpoint: a direct server gets one; a tracker key gets a new device
    while the tracker has a free one (spreading sessions over the fleet) and otherwise
    shares the held connection with the fewest sessions."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[tuple, list] = {}  # endpoint key -> [weakref to _Connection]

    def get(self, endpoint: dict, what: str) -> _Connection:
        import weakref

        key = tuple(sorted((k, str(v)) for k, v in endpoint.items() if k != "timeout"))
        with self._lock:
            held = [ref() for ref in self._held.get(key, [])]
            held = [c for c in held if c is not None and not c.broken]
            if held and ("tracker" not in endpoint
                         or tracker_free(endpoint["tracker"], endpoint["key"]) == 0):
                import sys
                return min(held, key=sys.getrefcount)
            connection = _Connection(*connect(endpoint, what))
            self._held[key] = [weakref.ref(c) for c in held + [connection]]
            return connection


_POOL = _Pool()
