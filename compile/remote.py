"""RPC connections to devices: a TVM RPC server, or a tracker's fleet under a key.

Under compile/ because both the tuner (candidates timed on a device) and the runtime
(RPCSession) connect, and compile/ must not import runtime/ (DESIGN's stage rules,
tests/test_layering.py). Every wait is bounded: an unreachable or busy device is a
BackendError naming the address and the timeout, never a hang.
"""
from __future__ import annotations

import threading

from ..graph.errors import BackendError
from .targets import rpc_address


def tracker_summary(address: str, timeout: float = 5.0) -> dict:
    """TVM's tracker summary ({"server_info": [...], "queue_info": {key: {free, pending}}}).

    Raises:
      BackendError when nothing answers at `address` ('host:port') within `timeout` s.
    """
    import socket

    from tvm import rpc

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError:
        raise BackendError(f"no RPC tracker answers at {address}") from None
    tracker = rpc.connect_tracker(host, int(port))
    try:
        return tracker.summary()
    finally:
        tracker.close()


def tracker_free(address: str, key: str) -> int:
    """Free devices under `key` at the tracker at `address` (0 when it does not answer)."""
    try:
        queue = tracker_summary(address).get("queue_info", {})
    except (BackendError, OSError, RuntimeError):
        return 0
    return int(queue.get(key, {}).get("free", 0))


def connect(endpoint: dict, what: str = "the device"):
    """(tvm.rpc.RPCSession, 'host:port') for a resolved rpc block, within its timeout.

    Raises:
      BackendError naming the address, the timeout and, for an emulated device, the
      command that starts it.
    """
    import socket

    timeout = float(endpoint.get("timeout", 10.0))
    where = rpc_address(endpoint)
    hint = (" (is it running? conv1d-transpose device status)" if "emulated" in endpoint
            else " (is TVM's RPC server running there and reachable?)")
    if "tracker" in endpoint:
        host, _, port = endpoint["tracker"].rpartition(":")
        port = int(port)
    else:
        host, port = endpoint["host"], int(endpoint["port"])
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise BackendError(f"{what}: cannot reach {where} within {timeout:g} s: "
                           f"{error.strerror or error}{hint}") from None

    from tvm import rpc

    def open_session():
        if "tracker" not in endpoint:
            return rpc.connect(host, port), f"{host}:{port}"
        tracker = rpc.connect_tracker(host, port)
        try:
            queue = tracker.summary().get("queue_info", {})
            if endpoint["key"] not in queue:
                raise BackendError(f"{what}: no device is registered under key "
                                   f"{endpoint['key']!r} at the tracker {endpoint['tracker']} "
                                   f"(keys there: {sorted(queue) or 'none'})")
            return _request(tracker, endpoint["key"])
        finally:
            tracker.close()

    busy = (", or no free device for the key" if "tracker" in endpoint else
            "; a server serves one session at a time: is another one open?")
    return _within(open_session, timeout, f"{what}: {where} did not give an RPC session "
                                          f"within {timeout:g} s (handshake not answered"
                                          f"{busy})")


def _request(tracker, key: str):
    """(session, 'host:port') of a free device under `key`: TrackerSession.request's
    protocol, kept here only to learn which device the tracker handed out."""
    from tvm import rpc
    from tvm.rpc import base

    sock = getattr(tracker, "_sock", None)
    if sock is None:  # TVM changed: ask the documented way, without the address
        return tracker.request(key, priority=1, max_retry=2), f"a device under key {key!r}"
    base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
    value = base.recvjson(sock)
    if value[0] != base.TrackerCode.SUCCESS:
        raise RuntimeError(f"the tracker refused the request for key {key!r}: {value!r}")
    url, port, matchkey = value[1]
    return rpc.connect(url, port, matchkey), f"{url}:{port}"


def _within(function, timeout: float, message: str):
    """function() in a daemon thread; BackendError(message) if it takes over `timeout` s."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target, name="rpc-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise BackendError(message)
    error = outcome.get("error")
    if isinstance(error, BackendError):
        raise error
    if error is not None:
        text = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise BackendError(f"{message.split(':')[0]}: RPC connection failed: {text}") from None
    return outcome["value"]
