"""Weights outside the library: `main`'s large constants become parameters, kept in a file.

TVM bakes a Relax module's constants into the exported library, and loading it
deserializes them through several copies: measured for demucs-dec1 (64 MB of filters) on
the 2-vCPU Zen 4 machine, `load_module` took 125 ms of a 235 ms cache hit. So the build
lifts every constant of `main` of at least `MIN_BYTES` into a trailing parameter of `main`
(`lift_constants`), and the artifact keeps their bytes in `params.bin`, one 64-byte
aligned tensor after another, described by the manifest (`write_params`). At load time
the file is read once into one aligned buffer while it is hashed (`read_params`); the
tensors are views of that buffer, which TVM reads in place (DLPack, no copy) on the CPU.

The digest is a sha256 tree: sha256 of the concatenated sha256 of each 4 MiB block, so
that both cores hash (hashlib releases the GIL): 20 ms for 64 MB against 38 ms for one
sha256 (same machine).
"""
from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PARAMS_NAME = "params.bin"
DIGEST = "sha256-tree-4MiB"
# Smaller constants stay in the library: they load in microseconds, and the kernels' own
# index constants must stay constants.
MIN_BYTES = 1 << 16
_ALIGNMENT = 64
_BLOCK = 4 << 20


def lift_constants(mod, min_bytes: int = MIN_BYTES):
    """`mod` with every constant of at least `min_bytes` in its Relax `main` replaced by a
    new trailing parameter of `main`, and those constants' values, in parameter order.

    The same constant object used twice becomes one parameter. Other functions keep
    their constants. Returns `(mod, [numpy arrays])`; `(mod, [])` when nothing is lifted.
    """
    import tvm
    from tvm import relax

    main = mod.functions.get(mod.get_global_var("main")) if _has_main(mod) else None
    if not isinstance(main, relax.Function):
        return mod, []
    lifted: dict = {}  # the constant object -> (its new parameter, its value)

    @relax.expr_functor.mutator
    class Lifter(relax.PyExprMutator):
        def visit_generic_const_(self, const):
            value = const.value
            if not isinstance(value, tvm.runtime.Tensor):
                return const
            array = value.numpy()
            if array.nbytes < min_bytes:
                return const
            if const not in lifted:
                var = relax.Var(f"param{len(lifted)}", const.ty)
                lifted[const] = (var, array)
            return lifted[const][0]

    body = Lifter(mod).visit_expr(main.body)
    if not lifted:
        return mod, []
    params = [var for var, _ in lifted.values()]
    new_main = relax.Function(list(main.params) + params, body, main.ret_ty, main.is_pure,
                              main.attrs, main.span)
    mod = mod.clone()
    mod[mod.get_global_var("main")] = new_main
    return mod, [array for _, array in lifted.values()]


def _has_main(mod) -> bool:
    return any(gv.name_hint == "main" for gv in mod.get_global_vars())


def layout(arrays) -> list[dict]:
    """Where each array lives in the params file: dtype, shape, byte offset (aligned)."""
    entries, offset = [], 0
    for array in arrays:
        offset = -(-offset // _ALIGNMENT) * _ALIGNMENT
        entries.append({"dtype": array.dtype.name, "shape": list(array.shape),
                        "offset": offset})
        offset += array.nbytes
    return entries


def _nbytes(entry: dict) -> int:
    return math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize


def write_params(directory: str, arrays) -> dict | None:
    """Write `arrays` to `directory/params.bin`; the manifest's "params" entry (None when
    there are no arrays)."""
    if not arrays:
        return None
    entries = layout(arrays)
    size = entries[-1]["offset"] + arrays[-1].nbytes
    buffer = _aligned_bytes(size)
    for entry, array in zip(entries, arrays):
        start = entry["offset"]
        buffer[start:start + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(
            np.uint8)
    path = os.path.join(directory, PARAMS_NAME)
    with open(path, "wb") as file:
        file.write(memoryview(buffer))
    return {"file": PARAMS_NAME, "bytes": size, "digest": DIGEST,
            "sha256": tree_digest(memoryview(buffer)), "tensors": entries}


def tree_digest(data: memoryview) -> str:
    """The `DIGEST` of `data`: sha256 over the sha256 of each 4 MiB block."""
    blocks = range(0, max(len(data), 1), _BLOCK)
    if len(blocks) == 1:
        digests = [hashlib.sha256(data).digest()]
    else:
        with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
            digests = list(pool.map(lambda i: hashlib.sha256(data[i:i + _BLOCK]).digest(),
                                    blocks))
    return hashlib.sha256(b"".join(digests)).hexdigest()


def entry_problem(entry) -> str | None:
    """Why a manifest's "params" entry is malformed, or None (null is fine: no params)."""
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("file") != PARAMS_NAME or \
            entry.get("digest") != DIGEST or not isinstance(entry.get("sha256"), str) or \
            not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("tensors"), list):
        return f"manifest params is {str(entry)[:200]!r}, not a {PARAMS_NAME} description"
    end = 0
    for tensor in entry["tensors"]:
        try:
            offset, nbytes = tensor["offset"], _nbytes(tensor)
            ok = isinstance(offset, int) and offset % _ALIGNMENT == 0 and offset >= end and \
                all(isinstance(d, int) and d >= 0 for d in tensor["shape"])
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            return f"manifest params tensor {str(tensor)[:200]!r} is malformed"
        end = offset + nbytes
    if end != entry["bytes"]:
        return f"manifest params tensors end at byte {end}, the file has {entry['bytes']}"
    return None


def read_params(path: str, entry: dict) -> tuple[list[np.ndarray] | None, str | None]:
    """(the arrays of `entry` read from `path`, None) once the file's size and digest
    match the manifest, else (None, why not). The arrays are aligned, writeable views
    of one private buffer, read once."""
    try:
        with open(path, "rb", buffering=0) as file:
            size = os.fstat(file.fileno()).st_size
            if size != entry["bytes"]:
                return None, (f"params file {PARAMS_NAME} has {size} bytes, the manifest says "
                              f"{entry['bytes']} (changed or truncated)")
            buffer = _aligned_bytes(size)
            view = memoryview(buffer)
            done = 0
            while done < size:
                count = file.readinto(view[done:])
                if not count:
                    break
                done += count
    except FileNotFoundError:
        return None, f"params file {PARAMS_NAME} is missing"
    if done != size:
        return None, f"params file {PARAMS_NAME} shrank while being read"
    digest = tree_digest(view)
    if digest != entry["sha256"]:
        return None, (f"params file {PARAMS_NAME} has digest {digest[:16]}..., the manifest "
                      f"says {entry['sha256'][:16]}... (changed or truncated)")
    arrays = []
    for tensor in entry["tensors"]:
        start = tensor["offset"]
        raw = buffer[start:start + _nbytes(tensor)]
        arrays.append(raw.view(np.dtype(tensor["dtype"])).reshape(tensor["shape"]))
    return arrays, None


def _aligned_bytes(size: int) -> np.ndarray:
    raw = np.empty(size + _ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start:start + size]
