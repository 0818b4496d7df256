"""What `auto` measured when it placed a model, remembered in the artifact cache.

Placing a model under `auto` (session.py `_place_nodes`) times the split against
onnxruntime alone, and where that loses, each kernel's segment too: ~3 s with a warm
artifact cache, 24 s for EnCodec's decoder from an empty one (its segments are built to
be timed, and then it runs on onnxruntime alone). Every later process would pay that
again for the same answer. So the outcome is written next to the artifacts, keyed by
everything that changes it: the model's bytes, the target, the thread count, this
machine (CPU model and count), and the versions of TVM, onnxruntime and compile/'s code.
A later open on the same machine builds (or loads) only the segments that won.

Set CONV1D_TRANSPOSE_REMEASURE=1 to measure again at every open (and write the new
outcome): after a change of machine load, say, or to compare.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import tempfile

from ..compile import cache as _cache

ENV_REMEASURE = "CONV1D_TRANSPOSE_REMEASURE"
FORMAT = "conv1d-transpose-placement/1"
FOLDER = "placements"


def machine() -> str:
    """This machine as the timings depend on it: architecture, CPU model, CPU count."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            model = next((line.split(":", 1)[1].strip() for line in info
                          if line.startswith(("model name", "Model"))), model)
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{os.cpu_count()}"


def key(model_bytes: bytes, target: dict, threads) -> str:
    """sha256 over the model and everything else that changes what `auto` measures."""
    material = {"format": FORMAT, "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
                "target": target, "threads": threads, "machine": machine(),
                "versions": _cache.versions(),
                "onnxruntime": _cache.version_of("onnxruntime")}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str)
                          .encode()).hexdigest()


def remeasure() -> bool:
    return os.environ.get(ENV_REMEASURE, "") not in ("", "0")


def width_class_key(memo_key: str, width_class) -> str:
    """The key of one width class's outcome (symbolic_session.WidthCheckedSession: 'tvm'
    or 'onnxruntime' for the inputs of that class) of the model under `memo_key`."""
    return hashlib.sha256(f"{memo_key}|{width_class!r}".encode()).hexdigest()


def read(cache_dir: str, memo_key: str,
         choices: tuple = ("split", "onnxruntime")) -> dict | None:
    """The outcome remembered under `memo_key`, or None (none, unreadable, not one of
    `choices`, or CONV1D_TRANSPOSE_REMEASURE set)."""
    if remeasure():
        return None
    try:
        with open(os.path.join(cache_dir, FOLDER, memo_key + ".json"), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or \
            record.get("choice") not in choices:
        return None
    return record


def write(cache_dir: str, memo_key: str, choice: str, *, tvm_nodes=(), reasons=None,
          times=None) -> None:
    """Remember an outcome: `choice` 'split' (with the kernel nodes that run on TVM and why
    the others do not), 'tvm' (a width class run whole on TVM) or 'onnxruntime' (alone),
    with the times measured. Atomic; a cache that cannot be written is skipped (the next
    open measures again)."""
    record = {"format": FORMAT, "choice": choice, "tvm_nodes": sorted(tvm_nodes),
              "reasons": dict(reasons or {}), "times": dict(times or {}),
              "measured_at": datetime.datetime.now(datetime.timezone.utc)
              .isoformat(timespec="seconds")}
    folder = os.path.join(cache_dir, FOLDER)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, sort_keys=True)
        os.replace(temp, os.path.join(folder, memo_key + ".json"))
    except OSError:
        pass
