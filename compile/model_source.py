"""The model a compile is asked for, and the sha256 that names it.

`compile_model` takes an onnx.ModelProto, a path to an .onnx file, or a `ModelSource`: a
model not made yet, named by a recipe, so that a cache hit need not make it at all. The
model's sha256 (of its deterministic serialization) is what the cache key and the
manifest record. Kept apart from the compile pipeline (compile/artifact.py) so that the
front and runtime/, which make `ModelSource`s, need nothing else of it.
"""
from __future__ import annotations

import hashlib
import os

import onnx

from ..graph.errors import ArgumentError


class ModelSource:
    """An ONNX model not made yet, and `recipe`: a sha256 of everything that decides its
    bytes (the arguments of the function that makes it, and `cache.exporter_version()`).

    The cache records which model each recipe made, so that a later cache hit finds its
    artifact without making the model, serializing it and hashing it: for demucs-dec1
    (64 MB of filters) that is ~0.6 s of a ~0.9 s cache hit (measured), against ~40 ms
    to hash the filters for the recipe. `spec`, when given, is also checked against the
    artifact's manifest.
    """

    def __init__(self, make, recipe, spec=None):
        self._make, self._recipe, self.spec = make, recipe, spec
        self._model = None

    @property
    def recipe(self) -> str:
        if callable(self._recipe):
            self._recipe = self._recipe()
        return self._recipe

    def model(self) -> onnx.ModelProto:
        if self._model is None:
            self._model = self._make()
        return self._model


def as_model(model) -> onnx.ModelProto:
    """The ModelProto of `model`: a ModelProto, a path to an .onnx file or a `ModelSource`
    (made now).

    Raises:
      ArgumentError: anything else.
    """
    if isinstance(model, ModelSource):
        return model.model()
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(model):
        return onnx.load(os.fspath(model))
    raise ArgumentError(f"model must be an onnx.ModelProto or a path to an .onnx file, "
                        f"got {model!r}")


def model_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def model_sha256(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model_bytes(model)).hexdigest()
