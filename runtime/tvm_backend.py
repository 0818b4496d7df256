"""`TVMSession`: a compiled artifact run by TVM's Relax VM, with onnxruntime's surface.

    session = TVMSession(model, "host")
    [y] = session.run(None, {"input": x})

The model is compiled (or taken from the cache) once, in the constructor; `run` only
converts the feeds, calls the VM's cached `main` (with the artifact's weights after the
inputs) and hands the outputs out.
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np

from ..compile.loader import Artifact
from ..compile.machine import configure_threads
from ..compile.targets import get_target
from ..graph.errors import ArgumentError, BackendError
# NodeArg, check_feeds and io_signature are this module's public names too.
from .loading import NodeArg, artifact_for, check_feeds, io_signature  # noqa: F401

# TVM's generated code assumes 64-byte aligned buffers; tvm.runtime.from_dlpack checks it,
# but a numpy array passed straight to a VM function is not checked, so we check.
_ALIGNMENT = 64
# Inputs up to this size are copied into a per-thread aligned buffer on Conv1DTranspose's
# path: a copy of 64 KiB costs less than asking numpy where an array lives (~1 us).
_STAGE_BYTES = 1 << 16
# On a GPU, a call that moves at most this many bytes (input + output) is staged through
# pinned host buffers (cudaMallocHost): a small copy from or to pageable numpy memory
# costs the driver a bounce through a buffer of its own and a wait, while a large one
# pays more for the extra memcpy into the pinned buffer. Median ms of a call, numpy in ->
# numpy out, pageable -> pinned both ways with the device sync it needs, interleaved in one
# process (tools/gpu/check.py, section copy_paths, H100, 2026-11-27, two runs,
# docs/cuda/h100-copy-paths-*.json): stream-chunk (0.1 MB) 0.089 -> 0.058 and 0.066 ->
# 0.048; hifigan-up1 (2 MB) 0.464 -> 0.435 and 0.281 -> 0.298; dilated (4.1 MB) 0.666 ->
# 0.642 and 0.551 -> 0.537; then, second run only, hifigan-up4 (13 MB) 1.050 -> 1.488,
# ncw-up2 (8.2 MB) 0.784 -> 1.007, batch8-up2 (16 MB) 1.503 -> 1.902.
_PINNED_BYTES = 1 << 20


class TVMSession:
    """Runs one ONNX model through a TVM artifact on this machine's CPU or GPU.

    Args:
      model_or_artifact: an onnx.ModelProto, a path to an .onnx file, or an artifact
        directory (from `compile_model` / `conv1d-transpose compile`).
      target: a target name in targets.yaml ('host' by default), or its entry; not one
        with an `rpc:` block (RPCSession runs those; `open_tvm_session` picks either).
      targets: a mapping from `load_targets` or a path to a targets.yaml.
      cache_dir: the artifact cache (default: the user cache directory).
    Raises:
      ArgumentError: the target runs on a remote device.
      BackendError (a ValueError): the target cannot run on this machine, or an artifact
      directory fails verification (hash, TVM version, target).
    """

    def __init__(self, model_or_artifact, target="host", *, targets=None, cache_dir=None,
                 threads=None):
        entry = get_target(target, targets)
        if entry.rpc:
            raise ArgumentError(f"target {entry.name!r} has an 'rpc' block in {entry.source}: "
                                f"it runs on a remote device, which TVMSession does not; "
                                f"open it with open_tvm_session (or InferenceSession with "
                                f"backend='tvm')")
        _, _, can_run, run_reason = entry.capabilities()
        if not can_run:
            raise BackendError(f"target {entry.name!r} cannot run on this machine: {run_reason}")
        self.artifact: Artifact = artifact_for(model_or_artifact, entry, targets, cache_dir)
        self.target = entry.name
        self.backend = f"tvm:{entry.name}"
        self.scheduled = self.artifact.scheduled

        import tvm
        # The VM from tvm.runtime, not tvm.relax: a runtime-only TVM (TVM_USE_RUNTIME_LIB=1,
        # or a deployment box without libtvm_compiler.so) has it but cannot import relax.
        from tvm.runtime.vm import VirtualMachine

        self.threads = configure_threads(threads)[0] if entry.family == "cpu" else None
        if entry.family == "cuda":
            load_cuda_runtime()
        self._device = tvm.cuda(0) if entry.family == "cuda" else tvm.cpu(0)
        # Where a GPU call's pinned host buffers live (_GpuStaging): CUDA's host memory.
        # (3: DLPack's kDLCUDAHost, which TVM allocates with cudaMallocHost.)
        self._host_device = tvm.runtime.Device(3, 0) if entry.family == "cuda" else None
        self._on_cpu = entry.family == "cpu"
        self._tensor = tvm.runtime.tensor
        self._empty = tvm.runtime.empty
        self._from_dlpack = tvm.runtime.from_dlpack
        # "pooled": an output buffer the caller has dropped is reused by a later call
        # instead of being freshly allocated (and page-faulted in) every call.
        self._vm = VirtualMachine(self.artifact.load_module(), self._device,
                                        memory_cfg="pooled")
        self._main = self._vm["main"]
        # The weights `main` takes after the inputs: on the CPU TVM reads the artifact's
        # aligned arrays in place (DLPack), on a GPU they are copied there once.
        self._params = tuple(
            self._from_dlpack(array) if self._on_cpu else self._tensor(array, self._device)
            for array in self.artifact.load_params())
        self._inputs, self._outputs, self._input_dtypes, self._output_index = \
            io_signature(self.artifact)
        # A fully static shape is checked with one tuple comparison on the hot path.
        self._input_shapes = [tuple(i.shape) if all(isinstance(d, int) for d in i.shape)
                              else None for i in self._inputs]
        # CPU results leave through DLPack without a copy: the VM allocates every output
        # afresh (a function's result never shares storage with a later call), and the
        # numpy array keeps the TVM tensor alive until the caller drops it.
        self._to_numpy = np.from_dlpack if self._on_cpu else (lambda t: t.numpy())
        self._local = threading.local()  # `_run_one`'s input buffer, one per thread
        # The Relax VM keeps its registers in the VM object and tvm_ffi releases the GIL
        # for the call: two threads in one VM at once corrupt each other's frames
        # (measured: "Check failed: reg < frame->register_file.size()" and segfaults with
        # 4 threads). onnxruntime's run is safe from any thread, so ours is too: one
        # call at a time per session (TVM parallelizes inside the call anyway).
        self._lock = threading.Lock()

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names, feeds) -> list[np.ndarray]:
        """Outputs named by `output_names` (None: all), for `feeds` keyed by input name."""
        check_feeds(feeds, self._inputs)
        arguments = [self._argument(feeds[arg.name], arg, dtype, shape) for arg, dtype, shape
                     in zip(self._inputs, self._input_dtypes, self._input_shapes)]
        with self._lock:
            result = self._main(*arguments, *self._params)
        values = list(result) if len(self._outputs) > 1 else [result]
        to_numpy = self._to_numpy
        if output_names is None:
            return [to_numpy(value) for value in values]
        try:
            return [to_numpy(values[self._output_index[name]]) for name in output_names]
        except KeyError as error:
            raise ArgumentError(f"output {error.args[0]!r} is not an output of the model; "
                                f"outputs: {list(self._output_index)}") from None

    def _run_one(self, array: np.ndarray) -> np.ndarray:
        """The output of a one-input, one-output model (Conv1DTranspose's) for an array
        whose shape and dtype the caller has checked.

        A small input is copied into this thread's aligned buffer, reused by every call:
        measured on the 10x8 -> 20x8 layer, 2.3 us a call against 17 us through `run`,
        whose fresh TVM tensor per call cost ~15 us. The buffer is safe to reuse because
        the op's kernel writes a freshly allocated output that never aliases its input.
        """
        if self._on_cpu and array.size and self._input_shapes[0] is not None and \
                array.nbytes <= _STAGE_BYTES:
            try:
                stage = self._local.stage
            except AttributeError:
                stage = self._local.stage = _aligned_empty(array.shape, array.dtype)
            with self._lock:
                np.copyto(stage, array)
                result = self._main(stage, *self._params)
            return self._to_numpy(result)
        if not self._on_cpu and self._input_shapes[0] is not None:
            try:
                staging = self._local.gpu_staging
            except AttributeError:
                staging = self._local.gpu_staging = _GpuStaging(
                    array.shape, array.dtype, self._outputs[0].shape, self._device,
                    self._host_device)
            return staging.run(self._main, self._params, array, self._lock)
        array = self._device_array(array)
        with self._lock:
            result = self._main(array, *self._params)
        return self._to_numpy(result)

    def _argument(self, value, arg: NodeArg, dtype: np.dtype, shape: tuple | None):
        array = value if type(value) is np.ndarray else np.asarray(value)
        if array.dtype != dtype:
            raise ArgumentError(f"input {arg.name!r} has dtype {array.dtype}; the model takes "
                                f"{dtype.name} ({arg.type})")
        if array.shape != shape and (
                array.ndim != len(arg.shape) or any(isinstance(d, int) and d != n
                                                    for d, n in zip(arg.shape, array.shape))):
            raise ArgumentError(f"input {arg.name!r} has shape {tuple(array.shape)}; the model "
                                f"takes {arg.shape}")
        return self._device_array(array)

    def _device_array(self, array: np.ndarray):
        """What the VM is called with for `array`: on the CPU the array itself where it is
        aligned and compact (the VM reads it in place, through DLPack), else an aligned
        copy; on a GPU a device tensor."""
        # An empty array may carry zero strides, which TVM refuses as "not compact"; a
        # read-only one cannot leave through DLPack ("signalling readonly is unsupported").
        if self._on_cpu and array.size:
            flags = array.flags
            if flags.c_contiguous and flags.writeable and array.ctypes.data % _ALIGNMENT == 0:
                return array  # zero copy
            copy = _aligned_empty(array.shape, array.dtype)
            np.copyto(copy, array)
            return copy
        return self._tensor(np.ascontiguousarray(array), self._device)


class _GpuStaging:
    """One thread's buffers for Conv1DTranspose's call on a GPU, reused by every call.

    The input goes to a device buffer: a fresh tensor per call costs a cudaMalloc and,
    when dropped, a cudaFree, which waits for the whole device. A call that moves at most
    _PINNED_BYTES is also staged through pinned host buffers, both ways; the caller still
    gets a fresh numpy array each call (a copy of the pinned output). Reusing the buffers
    is safe for the same reason as the CPU's input buffer: the kernel writes a freshly
    allocated output that never aliases its input, and each copy is ordered after the
    previous call's kernel on the same stream. TVM 0.27 copies with cudaMemcpyAsync, which
    returns before a copy into pinned memory is done, so the device is synchronized before
    the pinned output is read (from pageable memory, `numpy()` synchronizes).
    """

    def __init__(self, shape, dtype, out_shape, device, host_device):
        import tvm

        self.device = device
        self.input = tvm.runtime.empty(shape, dtype, device)
        dtype = np.dtype(dtype)
        static_out = all(isinstance(d, int) for d in out_shape)
        moved = (math.prod(shape) + (math.prod(out_shape) if static_out else 0)) * dtype.itemsize
        self.pinned = host_device is not None and static_out and moved <= _PINNED_BYTES
        if self.pinned:
            self.pinned_input, self.input_view = _host_buffer(shape, dtype, host_device)
            self.pinned_output, self.output_view = _host_buffer(out_shape, dtype, host_device)

    def run(self, main, params, array: np.ndarray, lock) -> np.ndarray:
        if not self.pinned:
            with lock:
                self.input.copyfrom(np.ascontiguousarray(array))
                result = main(self.input, *params)
            return result.numpy()
        with lock:
            np.copyto(self.input_view, array)
            self.pinned_input.copyto(self.input)
            result = main(self.input, *params)
        result.copyto(self.pinned_output)
        self.device.sync()
        return self.output_view.copy()


def _host_buffer(shape, dtype: np.dtype, host_device):
    """A TVM tensor on `host_device` (CUDA's pinned host memory, or the CPU in tests) and a
    numpy view of it; the view is valid while the tensor lives."""
    import ctypes

    import tvm

    tensor = tvm.runtime.empty(tuple(shape), str(dtype), host_device)
    nbytes = math.prod(shape) * dtype.itemsize
    buffer = (ctypes.c_char * nbytes).from_address(tensor.data_ptr())
    return tensor, np.frombuffer(buffer, dtype).reshape(shape)


def load_cuda_runtime() -> None:
    """Make sure TVM's CUDA runtime (libtvm_runtime_cuda.so) is loaded.

    A full TVM loads it at `import tvm`. A runtime-only TVM (TVM_USE_RUNTIME_LIB=1, or an
    install without libtvm_compiler.so: what a deployment box needs to run artifacts built
    elsewhere) skips every device backend, and `tvm.cuda(0)` then has no device API.

    Raises:
      BackendError naming the library and why it did not load (e.g. libcudart.so.13).
    """
    import tvm
    from tvm.base import _LOADED_LIBS

    if "tvm_runtime_cuda" in _LOADED_LIBS or tvm.get_global_func("device_api.cuda",
                                                                   allow_missing=True):
        return
    import ctypes
    path = os.path.join(os.path.dirname(os.path.realpath(_LOADED_LIBS["tvm_runtime"]._name)),
                        "libtvm_runtime_cuda.so")
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    except OSError as error:
        raise BackendError(f"TVM's CUDA runtime did not load: {error} (it needs the CUDA "
                           f"runtime library of the CUDA version TVM was built with, and "
                           f"the driver's libcuda.so.1)") from None


def _aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is `_ALIGNMENT`-byte aligned."""
    dtype = np.dtype(dtype)
    raw = np.empty(math.prod(shape) * dtype.itemsize + _ALIGNMENT, np.uint8)
    return np.ndarray(shape, dtype, raw, -raw.ctypes.data % _ALIGNMENT)
