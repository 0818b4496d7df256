"""What both TVM sessions (on this machine, tvm_backend.py; on a remote device,
rpc_backend.py) do before they run anything: find the artifact for what the caller gave
(a model to compile, or an artifact directory to verify), and describe its inputs and
outputs, and check feeds, the way onnxruntime does."""
from __future__ import annotations

import collections
import os

import numpy as np
import onnx

from ..compile.artifact import compile_model
from ..compile.loader import Artifact, load_artifact
from ..compile.model_source import ModelSource
from ..graph.errors import ArgumentError, BackendError

# Like onnxruntime's NodeArg: name, shape (ints, or str/None for free dims), type string.
NodeArg = collections.namedtuple("NodeArg", ["name", "shape", "type"])

_ONNX_TYPE_NAMES = {"float16": "tensor(float16)", "float32": "tensor(float)",
                    "float64": "tensor(double)", "int64": "tensor(int64)",
                    "int32": "tensor(int32)", "bfloat16": "tensor(bfloat16)"}


def artifact_for(model_or_artifact, entry, targets, cache_dir) -> Artifact:
    """The artifact a session for target `entry` runs: `model_or_artifact` compiled (or
    taken from the cache), or, for an artifact directory, that artifact once verified
    against the target."""
    if isinstance(model_or_artifact, Artifact):
        model_or_artifact = model_or_artifact.path
    if isinstance(model_or_artifact, (onnx.ModelProto, ModelSource)):
        return compile_model(model_or_artifact, entry, targets=targets, cache_dir=cache_dir)
    if isinstance(model_or_artifact, (str, os.PathLike)):
        path = os.fspath(model_or_artifact)
        if os.path.isdir(path):
            try:
                return load_artifact(path, expected={"target": entry.target_dict()})
            except BackendError as error:
                raise BackendError(f"{error} (asked for target {entry.name!r})") from None
        if os.path.isfile(path):
            return compile_model(onnx.load(path), entry, targets=targets, cache_dir=cache_dir)
        raise ArgumentError(f"model_or_artifact={path!r} is neither a file nor a directory")
    raise ArgumentError(f"model_or_artifact must be an onnx.ModelProto, a path to an .onnx "
                        f"file or an artifact directory, got {type(model_or_artifact).__name__}")


def io_signature(artifact: Artifact):
    """(inputs, outputs as NodeArgs, input dtypes, output name -> index) of an artifact."""
    inputs = [NodeArg(i["name"], list(i["shape"]), _type_name(i["dtype"]))
              for i in artifact.inputs]
    outputs = [NodeArg(o["name"], list(o["shape"]), _type_name(o["dtype"]))
               for o in artifact.outputs]
    dtypes = [np.dtype(i["dtype"]) for i in artifact.inputs]
    return inputs, outputs, dtypes, {o.name: n for n, o in enumerate(outputs)}


def check_feeds(feeds, inputs) -> None:
    """Feeds must be a dict naming exactly the model's inputs (onnxruntime's contract)."""
    if not isinstance(feeds, dict):
        raise ArgumentError(f"feeds must be a dict of input name -> array, "
                            f"got {type(feeds).__name__}")
    if len(feeds) != len(inputs) or any(i.name not in feeds for i in inputs):
        raise ArgumentError(f"feeds have keys {sorted(feeds)}; the model's inputs are "
                            f"{[i.name for i in inputs]}")


def _type_name(dtype: str | None) -> str:
    return _ONNX_TYPE_NAMES.get(dtype, f"tensor({dtype})")
