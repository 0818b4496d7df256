"""Other libraries' transposed convolutions, wrapped as bench backends (`bench.py`).

Each factory takes (spec, filters, threads) and returns a `Runner` whose `call(x)` takes
and returns numpy arrays in the spec's layout, like our own backends do, so conversion
costs are counted alike. A library that is missing or refuses the call raises
`Unavailable` with the reason; the bench lists it as skipped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Callable

import numpy as np

from .graph.spec import Conv1DTransposeSpec


class Unavailable(Exception):
    """This backend cannot run here; the message says why (shown as 'skipped: ...')."""


@dataclasses.dataclass
class Runner:
    """One backend ready to run one layer.

    backend: the name in the bench's tables ('onnxruntime:cpu', 'tvm:host', 'torch').
    target: what it runs on ('cpu' or a targets.yaml name).
    threads: worker threads it runs with; pinned: whether we could set them.
    """

    backend: str
    target: str
    call: Callable[[np.ndarray], np.ndarray]
    threads: int | None
    pinned: bool
    note: str = ""


def tensorflow_runner(spec: Conv1DTransposeSpec, filters: np.ndarray, threads: int,
                      target: str | None = None) -> Runner:
    """`tf.nn.conv1d_transpose` inside a `tf.function`, filters held as a constant."""
    try:
        with _quiet_native_stderr():
            import tensorflow as tf
    except ImportError:
        raise Unavailable("tensorflow not installed (pip install '.[reference]')") from None
    pinned, note = _pin_tensorflow_threads(tf, threads)
    actual = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    weights = tf.constant(filters)

    @tf.function(input_signature=[tf.TensorSpec(spec.input_shape, spec.dtype)])
    def run(x):
        return tf.nn.conv1d_transpose(x, weights, list(spec.output_shape), spec.stride,
                                      spec.padding, spec.data_format, spec.dilation)

    def call(x):
        return run(x).numpy()

    try:
        call(np.zeros(spec.input_shape, spec.dtype))
    except Exception as error:  # TF's own error types; e.g. float16 with NCW on CPU
        raise Unavailable(f"tensorflow {tf.__version__} refuses this call: "
                          f"{_first_line(error)}") from None
    return Runner("tensorflow", "cpu", call, actual, pinned, note)


@contextlib.contextmanager
def _quiet_native_stderr(always: bool = False):
    # TF 2.21's C++ start-up notes (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL when it is
    # set from Python after start: silence file descriptor 2 while TF loads (or, with
    # `always`, while a native library prints its notes).
    if "tensorflow" in sys.modules and not always:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pin_tensorflow_threads(tf, threads: int) -> tuple[bool, str]:
    # TF fixes its thread pools when its runtime starts; later calls raise RuntimeError.
    config = tf.config.threading
    if (config.get_intra_op_parallelism_threads(), config.get_inter_op_parallelism_threads()) \
            == (threads, 1):
        return True, ""
    try:
        config.set_intra_op_parallelism_threads(threads)
        config.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        return False, ("TensorFlow's runtime had started before the bench; its thread "
                       "pools could not be resized")
    return True, ""


def torch_runner(spec: Conv1DTransposeSpec, filters: np.ndarray, threads: int,
                 target: str | None = None) -> Runner:
    """`torch.nn.functional.conv_transpose1d`, with TF's layout and padding mapped onto it.

    torch takes NCW input, weights `[in, out, K]` and one padding for both ends. TF's SAME
    puts the odd cropped position at the end, which torch cannot express: then compute
    the uncropped output and slice `[pad_begin, pad_begin + O)`, zero-filling past the
    last contribution.

    target 'cuda' runs it on GPU 0 (cuDNN, TF32 off so that float32 stays float32); each
    call copies the input there and the output back, as TVM's CUDA session does.
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise Unavailable("torch not installed (pip install torch)") from None
    on_gpu = target == "cuda"
    if on_gpu:
        if not torch.cuda.is_available():
            raise Unavailable(f"torch {torch.__version__} sees no CUDA GPU")
        # cuDNN would otherwise round float32 operands to TF32 (10-bit mantissa).
        torch.backends.cudnn.allow_tf32 = False
        pinned, note = True, ""
    else:
        pinned, note = _pin_torch_threads(torch, threads)
    device = torch.device("cuda" if on_gpu else "cpu")
    weight = torch.from_numpy(np.ascontiguousarray(filters.transpose(2, 1, 0))).to(device)
    symmetric = spec.pad_begin == spec.pad_end
    padding, output_padding = (spec.pad_begin, spec.output_padding) if symmetric else (0, 0)
    begin, width = spec.pad_begin, spec.out_width
    nwc = spec.data_format == "NWC"

    def call(x):
        with torch.inference_mode():
            data = torch.from_numpy(x).to(device)
            if nwc:
                data = data.permute(0, 2, 1)
            y = F.conv_transpose1d(data, weight, stride=spec.stride, padding=padding,
                                   output_padding=output_padding, dilation=spec.dilation)
            if not symmetric:
                y = y[:, :, begin:begin + width]
                if y.shape[2] < width:
                    y = F.pad(y, (0, width - y.shape[2]))
            if nwc:
                y = y.permute(0, 2, 1)
            return y.contiguous().cpu().numpy()

    try:
        call(np.zeros(spec.input_shape, spec.dtype))
    except Exception as error:  # e.g. a dtype torch's CPU kernels lack
        raise Unavailable(f"torch {torch.__version__} refuses this call: "
                          f"{_first_line(error)}") from None
    if on_gpu:
        return Runner("torch:cuda", "cuda", call, None, True,
                      f"{torch.cuda.get_device_name(0)}, cuDNN, TF32 off")
    return Runner("torch", "cpu", call, torch.get_num_threads(), pinned, note)


def onnxruntime_cuda_runner(spec: Conv1DTransposeSpec, filters: np.ndarray, threads: int,
                            target: str | None = None) -> Runner:
    """onnxruntime-gpu's CUDA execution provider (cuDNN, TF32 off) on GPU 0, running the
    `portable=True` form of the fallback's model; each call copies the input there and the
    output back, as TVM's CUDA session does."""
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - a core dependency
        raise Unavailable("onnxruntime not installed") from None
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise Unavailable(f"onnxruntime {onnxruntime.__version__} has no CUDA execution "
                          f"provider (pip install onnxruntime-gpu)")
    session = onnxruntime_provider_session(spec, filters, "CUDAExecutionProvider",
                                           CUDA_PROVIDER_OPTIONS)
    (input_name,) = [i.name for i in session.get_inputs()]

    def call(x):
        return session.run(None, {input_name: x})[0]

    return Runner("onnxruntime:cuda", "cuda", call, None, True,
                  f"onnxruntime {onnxruntime.__version__}, cuDNN, TF32 off")


# use_tf32=0: cuDNN would otherwise round float32 operands to TF32 (10-bit mantissa).
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}


def onnxruntime_provider_session(spec, filters, provider: str, options: dict):
    """An onnxruntime session of the layer's `portable=True` model on one execution
    provider alone (also tools/gpu/check.py's, on device-resident data).

    Explicit pads, because onnxruntime's CUDA provider (1.31.1) puts a ConvTranspose with
    an `auto_pad` attribute, the default form's, on the CPU. onnxruntime places a node its
    provider cannot run on the CPU, and falls back to the CPU when the provider's
    libraries (CUDA, cuDNN) fail to load, printing an error and carrying on: both are
    refused here (Unavailable), so that a timing is always the provider's."""
    import onnxruntime

    from .graph.onnx_export import build_model

    session_options = onnxruntime.SessionOptions()
    session_options.log_severity_level = 3
    if provider != "CPUExecutionProvider":  # onnxruntime refuses that for the CPU itself
        session_options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        session = onnxruntime.InferenceSession(
            build_model(spec, filters, portable=True).SerializeToString(), session_options,
            providers=[(provider, options)])
    except Exception as error:  # onnxruntime's pybind11 exception types
        raise Unavailable(f"onnxruntime {onnxruntime.__version__} cannot run this model on "
                          f"{provider}: {_first_line(error)}") from None
    if session.get_providers()[:1] != [provider]:
        raise Unavailable(f"onnxruntime {onnxruntime.__version__} could not start "
                          f"{provider} (got {', '.join(session.get_providers())})")
    return session


def openvino_runner(spec: Conv1DTransposeSpec, filters: np.ndarray, threads: int,
                    target: str | None = None) -> Runner:
    """OpenVINO's CPU plugin on the layer's `portable=True` ONNX model, in float32
    precision (its CPU plugin would otherwise run bf16/f16 where the CPU has them).

    The portable form, because OpenVINO 2026.4.1 computes wrong results from the default
    form (`output_shape` + SAME_UPPER) whenever the total padding is odd (issue 31;
    `conv1d-transpose portability` measures it, docs/openvino-odd-padding.py reproduces
    it): the form to export for OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        raise Unavailable("openvino not installed (pip install 'conv1d-transpose[peers]')") \
            from None
    from .graph.onnx_export import build_model

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY"}
    try:
        model = core.read_model(build_model(spec, filters, portable=True).SerializeToString(),
                                b"")
        compiled = core.compile_model(model, "CPU", config)
    except Exception as error:
        raise Unavailable(f"openvino {ov.__version__} cannot compile this model: "
                          f"{_first_line(error)}") from None
    request = compiled.create_infer_request()

    def call(x):
        return request.infer([x])[0].copy()

    try:
        call(np.zeros(spec.input_shape, spec.dtype))
    except Exception as error:
        raise Unavailable(f"openvino {ov.__version__} refuses this call: "
                          f"{_first_line(error)}") from None
    return Runner("openvino", "cpu", call, int(compiled.get_property("INFERENCE_NUM_THREADS")),
                  True, f"openvino {ov.__version__}, CPU plugin, f32, portable ONNX form")


def litert_runner(spec: Conv1DTransposeSpec, filters: np.ndarray, threads: int,
                  target: str | None = None) -> Runner:
    """LiteRT (TensorFlow Lite) with XNNPACK on a TFLite model of the same call, converted
    from `tf.nn.conv1d_transpose` in a `tf.function` by TensorFlow's converter. TFLite is
    NHWC only: an NCW call is transposed on the way in and out, as a user would."""
    try:
        with _quiet_native_stderr():
            import tensorflow as tf
    except ImportError:
        raise Unavailable("litert needs tensorflow to convert the call "
                          "(pip install 'conv1d-transpose[reference]')") from None
    try:
        from ai_edge_litert.interpreter import Interpreter
        package = "ai-edge-litert"
    except ImportError:
        raise Unavailable("ai-edge-litert not installed (pip install "
                          "'conv1d-transpose[peers]')") from None
    if spec.dilation > 1:  # (the converter would fail after seconds with an MLIR dump)
        raise Unavailable("litert's TRANSPOSE_CONV has no dilation (TensorFlow's converter "
                          "leaves Conv2DBackpropInput to the TF Select ops)")
    nwc_input = (spec.batch, spec.in_width, spec.in_channels)
    nwc_output = [spec.batch, spec.out_width, spec.out_channels]
    weights = tf.constant(filters)

    @tf.function(input_signature=[tf.TensorSpec(nwc_input, spec.dtype)])
    def run(x):
        return tf.nn.conv1d_transpose(x, weights, nwc_output, spec.stride, spec.padding,
                                      "NWC", spec.dilation)

    try:
        with _quiet_native_stderr(always=True):
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [run.get_concrete_function()], run)
            flatbuffer = converter.convert()
            # (XNNPACK's "Created TensorFlow Lite XNNPACK delegate" note goes to fd 2.)
            interpreter = Interpreter(model_content=flatbuffer, num_threads=int(threads))
            interpreter.allocate_tensors()
    except Exception as error:
        raise Unavailable(f"litert cannot take this call: {_first_line(error)}") from None
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    ncw = spec.data_format == "NCW"

    def call(x):
        interpreter.set_tensor(inp["index"], x.transpose(0, 2, 1) if ncw else x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        return np.ascontiguousarray(y.transpose(0, 2, 1)) if ncw else y.copy()

    try:
        with _quiet_native_stderr(always=True):
            call(np.zeros(spec.input_shape, spec.dtype))
    except Exception as error:
        raise Unavailable(f"litert refuses this call: {_first_line(error)}") from None
    return Runner("litert", "cpu", call, int(threads), True,
                  f"{package}, XNNPACK, converted by tensorflow {tf.__version__}")


def _pin_torch_threads(torch, threads: int) -> tuple[bool, str]:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # allowed once, before any inter-op work; harmless here
        pass
    return torch.get_num_threads() == threads, ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
