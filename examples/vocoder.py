"""A small vocoder-like upsampler built around conv1d_transpose, run on onnxruntime and TVM.

    Conv(k=7) -> conv1d_transpose(x4) -> LeakyReLU -> conv1d_transpose(x2) -> Tanh

The model is an ordinary ONNX graph (NCW, like most exported vocoders); the two upsampling
layers are inserted with `graph.embed.add_conv1d_transpose`, with TF's arguments and
TF-layout filters: once as plain nodes, once as calls of our ONNX local function. Each
model is saved, then run by onnxruntime and by our TVM path; the two must agree within
float32 tolerance.

    python examples/vocoder.py [--out-dir DIR] [--frames 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conv1d_transpose.graph.embed import add_conv1d_transpose
from conv1d_transpose.runtime import InferenceSession
from conv1d_transpose.runtime.tvm_backend import TVMSession

MELS, CHANNELS = 16, 32  # input features, first layer's channels
UPSAMPLES = ((4, 8), (2, 4))  # (stride, kernel): HiFi-GAN-style K = 2 * stride


def build_vocoder(frames: int, as_function: bool, seed: int = 0) -> onnx.ModelProto:
    """Conv -> conv1d_transpose -> LeakyReLU -> conv1d_transpose -> Tanh, NCW, batch 1."""
    rng = np.random.default_rng(seed)
    conv_w = (rng.standard_normal((CHANNELS, MELS, 7)) / np.sqrt(MELS * 7)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["mel", "pre/w"], ["pre/out"], name="pre",
                          kernel_shape=[7], pads=[3, 3])],
        "vocoder", [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, MELS, frames])],
        [], initializer=[numpy_helper.from_array(conv_w, "pre/w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="conv1d-transpose example")
    model.ir_version = 8

    tensor, channels, width = "pre/out", CHANNELS, frames
    for index, (stride, kernel) in enumerate(UPSAMPLES):
        out_channels = channels // 2
        # TF's filter layout: [kernel_width, out_channels, in_channels].
        filters = (rng.standard_normal((kernel, out_channels, channels))
                   / np.sqrt(channels * kernel / stride)).astype(np.float32)
        width *= stride
        tensor = add_conv1d_transpose(model, tensor, filters, [1, out_channels, width],
                                      stride, "SAME", "NCW", name=f"up{index}",
                                      input_shape=[1, channels, width // stride],
                                      as_function=as_function)
        if index < len(UPSAMPLES) - 1:
            model.graph.node.append(helper.make_node("LeakyRelu", [tensor], [f"act{index}"],
                                                     name=f"act{index}", alpha=0.1))
            tensor = f"act{index}"
        channels = out_channels
    model.graph.node.append(helper.make_node("Tanh", [tensor], ["audio"], name="post"))
    model.graph.output.append(helper.make_tensor_value_info(
        "audio", TensorProto.FLOAT, [1, channels, width]))
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", help="where to save the models (default: a temp dir)")
    parser.add_argument("--frames", type=int, default=32, help="input frames (default 32)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="vocoder-")
    os.makedirs(out_dir, exist_ok=True)

    mel = np.random.default_rng(1).standard_normal((1, MELS, args.frames)).astype(np.float32)
    failures = 0
    for as_function in (False, True):
        kind = "function" if as_function else "nodes"
        model = build_vocoder(args.frames, as_function)
        path = os.path.join(out_dir, f"vocoder_{kind}.onnx")
        onnx.save(model, path)
        ops = ", ".join(n.op_type for n in onnx.load(path).graph.node)
        (ort,) = InferenceSession(path, backend="onnxruntime").run(None, {"mel": mel})
        session = TVMSession(path, "host")  # = InferenceSession(path, backend="tvm")
        (tvm,) = session.run(None, {"mel": mel})
        scheduled = session.scheduled
        error = float(np.max(np.abs(ort - tvm)))
        ok = ort.shape == tvm.shape and bool(np.allclose(ort, tvm, rtol=1e-5, atol=1e-5))
        failures += not ok
        print(f"[{kind}] {path}: {ops}")
        print(f"  mel {mel.shape} -> audio {ort.shape}; {session.backend} "
              f"(fast kernel: {scheduled}) vs onnxruntime: max |diff| {error:.2e} "
              f"{'OK' if ok else 'MISMATCH'}")
    print("vocoder example:", "all backends agree" if not failures else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
