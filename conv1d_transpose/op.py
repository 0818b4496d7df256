"""The public operator: `conv1d_transpose(...)` and the reusable `Conv1DTranspose`."""
from __future__ import annotations

import collections
import hashlib
import json
import threading

import numpy as np

from .compile.cache import exporter_version
from .compile.model_source import ModelSource
from .compile.params import tree_digest
from .graph.arguments import as_array, check_arrays, make_spec, normalize_dtype
from .graph.errors import ArgumentError, DtypeError, ShapeError
from .graph.onnx_export import DEFAULT_OPSET, INPUT_NAME, build_model
from .graph.spec import Conv1DTransposeSpec
from .runtime.session import normalize_backend, normalize_target, open_session

EMPTY_BACKEND = "none (empty output)"


class Conv1DTranspose:
    """A conv1d_transpose with fixed filters, built once and called many times.

    Args:
      filters: `[filter_width, output_channels, in_channels]` array (float16/32/64).
      output_shape, strides, padding, data_format, dilations, name: as in
        `tf.nn.conv1d_transpose`. The input width is implied by `output_shape` (the
        forward conv1d of the output width).
      backend: 'auto' (default), 'onnxruntime' or 'tvm'.
      target: target name from targets.yaml ('host').
      threads, cache_dir, targets: passed to the session (see `InferenceSession`).

    `op(x)` returns the output; `op.backend` says which backend runs it;
    `op.to_onnx()` / `op.save_onnx(path)` export the model; `op.stream()` runs it chunk
    by chunk.
    """

    def __init__(self, filters, output_shape, strides, padding="SAME", data_format="NWC",
                 dilations=None, name=None, *, backend="auto", target="host", threads=None,
                 cache_dir=None, targets=None, _input_shape=None):
        filters = as_array(filters, "filters")
        dtype = normalize_dtype(filters.dtype, "filters")
        backend = normalize_backend(backend)
        target = normalize_target(target)
        self.spec: Conv1DTransposeSpec = make_spec(_input_shape, filters.shape, output_shape,
                                                   strides, padding, data_format, dilations,
                                                   dtype)
        self.name = name
        self._options = {"backend": backend, "target": target, "threads": threads,
                         "cache_dir": cache_dir, "targets": targets}
        self._filters = np.array(filters, copy=True)
        self._filters.setflags(write=False)
        self._input_shape = self.spec.input_shape
        self._dtype = np.dtype(self.spec.dtype)
        if self.spec.is_empty:
            self._session = None
            self._zeros = np.zeros(self.spec.output_shape, self._dtype)
        else:
            # The model is made only if a backend needs it: a TVM cache hit finds its
            # artifact by the recipe (see ModelSource) without exporting the model.
            source = ModelSource(self.to_onnx, self._recipe, self.spec)
            self._session = open_session(source, backend, target, threads=threads,
                                         cache_dir=cache_dir, targets=targets)
        # Sessions are not documented as safe to call from several threads at once.
        self._lock = threading.Lock()
        self._chunk_ops = None  # the VALID ops every stream() of this op shares
        # TVM's one-input path skips the feeds dict and the checks made here already.
        # (Neither refers back to self: an op that is dropped frees its session at once,
        # not at the next garbage collection. That matters for a session on an RPC
        # device, whose server takes one session at a time.)
        self._run = getattr(self._session, "_run_one", None) or _feeds_runner(self._session)

    @property
    def backend(self) -> str:
        """Which backend runs this op: e.g. 'onnxruntime:cpu' or 'tvm:host'."""
        return self._session.backend if self._session is not None else EMPTY_BACKEND

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self.spec.output_shape

    def __call__(self, input) -> np.ndarray:
        if not isinstance(input, np.ndarray):
            input = as_array(input, "input")
        if input.shape != self._input_shape:
            raise ShapeError(f"input has shape {input.shape}; this op takes "
                             f"{self._input_shape} (implied by output_shape "
                             f"{list(self.spec.output_shape)})")
        if input.dtype != self._dtype:
            raise DtypeError(f"input has dtype {input.dtype}; this op's filters are "
                             f"{self._dtype}, and the dtypes must be equal")
        if self._session is None:
            return self._zeros.copy()
        with self._lock:
            return self._run(input)

    def stream(self):
        """A `Stream` of this op: `push(chunk)` any number of input frames, get back the
        output positions no later frame can change; `flush()` the rest. Everything
        returned, concatenated, is `op(x)` (conv1d_transpose/streaming.py)."""
        from .streaming import ChunkOps, Stream

        spec, options = self.spec, self._options

        def valid_op(output_shape):  # (the stream's ops: the same filters, backend, target)
            return Conv1DTranspose(self._filters, output_shape, spec.stride, "VALID",
                                   spec.data_format, spec.dilation, **options)
        with self._lock:
            if self._chunk_ops is None:
                self._chunk_ops = ChunkOps()
        return Stream(spec, valid_op, self._chunk_ops)

    def to_onnx(self, *, dynamic_batch: bool = False, dynamic_width: bool = False,
                portable: bool = False, as_function: bool = False, form: str = "output_shape",
                opset: int = DEFAULT_OPSET, streaming: bool = False,
                chunk_frames: int | None = None):
        """The ONNX model (Transpose -> ConvTranspose -> Transpose, filters as initializer).

        dynamic_batch / dynamic_width: symbolic dimensions (width: only where the output
        width follows from the input width); portable: the explicit-pads form that every
        measured consumer gets right; as_function: one node calling an ONNX local function.
        streaming: instead, one streaming step for chunks of `chunk_frames` frames, with
        the carried state as an extra input and output (graph/streaming_export.py).
        """
        if streaming:
            from .graph.streaming_export import build_step_model
            return build_step_model(self.spec, self._filters, chunk_frames, opset=opset,
                                    name=self.name)
        if chunk_frames is not None:
            raise ArgumentError("chunk_frames is for streaming=True")
        return build_model(self.spec, self._filters, form=form, portable=portable,
                           opset=opset, name=self.name, dynamic_batch=dynamic_batch,
                           dynamic_width=dynamic_width, as_function=as_function)

    def _recipe(self) -> str:
        """sha256 of everything `to_onnx()` (with its defaults) is a function of."""
        material = {"model": "Conv1DTranspose.to_onnx", "spec": self.spec.to_json(),
                    "name": self.name, "dtype": self._filters.dtype.str,
                    "defaults": repr(sorted(Conv1DTranspose.to_onnx.__kwdefaults__.items())),
                    "exporter": exporter_version()}
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode())
        # The filters through the parallel tree hash: 64 MB in ~20 ms instead of ~38.
        raw = np.ascontiguousarray(self._filters).reshape(-1).view(np.uint8)
        digest.update(tree_digest(memoryview(raw)).encode())
        return digest.hexdigest()

    def save_onnx(self, path, **options) -> None:
        """Write `to_onnx(**options)` to `path`."""
        import onnx
        onnx.save(self.to_onnx(**options), path)

    def __repr__(self) -> str:
        s = self.spec
        return (f"Conv1DTranspose(filters={list(s.filters_shape)}, output_shape="
                f"{list(s.output_shape)}, strides={s.stride}, padding={s.padding!r}, "
                f"data_format={s.data_format!r}, dilations={s.dilation}, dtype={s.dtype}, "
                f"backend={self.backend!r})")


# The functional API keeps recently used ops: a TVM build or an onnxruntime session is
# made once per (arguments, filters) and reused across calls.
_OPS: "collections.OrderedDict[tuple, Conv1DTranspose]" = collections.OrderedDict()
_OPS_LOCK = threading.Lock()
_OPS_SIZE = 32


def conv1d_transpose(input, filters, output_shape, strides, padding="SAME",
                     data_format="NWC", dilations=None, name=None, *, backend="auto",
                     target="host"):
    """`tf.nn.conv1d_transpose`, with TensorFlow's arguments and TensorFlow's answer.

    Args:
      input: `[batch, in_width, in_channels]` (NWC) or `[batch, in_channels, in_width]`
        (NCW); float16, float32 or float64.
      filters: `[filter_width, output_channels, in_channels]`, same dtype as input.
      output_shape: 3 integers in the layout of `data_format`.
      strides, dilations: int, or 1 or 3 ints (3: in `data_format`'s layout, batch and
        channel entries 1). Dilations default to 1.
      padding: 'SAME' or 'VALID'. data_format: 'NWC' or 'NCW'.
      name: a name for the exported nodes.
      backend: 'auto', 'onnxruntime' or 'tvm'. target: a name in targets.yaml.
    Returns:
      A numpy array of `output_shape` and the input's dtype.
    Raises:
      ValueError (a subclass) naming the argument, before anything is built.
    """
    input, filters = check_arrays(input, filters)
    backend = normalize_backend(backend)
    target = normalize_target(target)
    spec = make_spec(input.shape, filters.shape, output_shape, strides, padding,
                     data_format, dilations, input.dtype)
    if spec.is_empty:
        return np.zeros(spec.output_shape, spec.dtype)
    digest = hashlib.blake2b(np.ascontiguousarray(filters).view(np.uint8), digest_size=16).digest()
    key = (spec, digest, name, backend, target)
    with _OPS_LOCK:
        op = _OPS.get(key)
        if op is not None:
            _OPS.move_to_end(key)
    if op is None:
        op = Conv1DTranspose(filters, spec.output_shape, spec.stride, spec.padding,
                             spec.data_format, spec.dilation, name, backend=backend,
                             target=target, _input_shape=spec.input_shape)
        with _OPS_LOCK:
            _OPS[key] = op
            while len(_OPS) > _OPS_SIZE:
                _OPS.popitem(last=False)
    return op(input)


def _feeds_runner(session):
    """run(input) through the session's onnxruntime-style `run`."""
    def run(input):
        return session.run(None, {INPUT_NAME: np.ascontiguousarray(input)})[0]
    return run
