"""OpenVINO CPU plugin: ConvTranspose with `output_shape` + `auto_pad=SAME_UPPER` is wrong
when the total padding is odd. A self-contained reproducer, ready to file upstream.

    pip install numpy onnx onnxruntime openvino
    python docs/upstream/openvino-odd-padding.py

The ONNX operator text: with `output_shape` given, total_padding = stride*(in-1) +
output_padding + ((kernel-1)*dilation + 1) - output_shape, and SAME_UPPER puts
total_padding // 2 at the start and the rest at the end. onnxruntime (and TensorFlow's
conv1d_transpose, which this model mirrors) follow it. With an odd total the two ends
differ by one; OpenVINO's result is then wrong at most positions (max abs error well
above float32 rounding), while the same layer with explicit `pads` is right, as is any
layer with an even total (K=16, s=8 below).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def model(W, C_in, C_out, K, s, explicit):
    O = W * s  # SAME: output = input * stride
    total = s * (W - 1) + K - O
    attrs = dict(strides=[s], kernel_shape=[K])
    if explicit:
        attrs["pads"] = [total // 2, total - total // 2]
    else:
        attrs.update(output_shape=[O], auto_pad="SAME_UPPER")
    w = np.random.default_rng(0).standard_normal((C_in, C_out, K)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)], "repro",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_in, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C_out, O])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m, total


def main():
    import onnxruntime
    import openvino as ov

    core = ov.Core()
    print(f"openvino {ov.__version__}, onnxruntime {onnxruntime.__version__}")
    for K, s in ((10, 5), (6, 3), (16, 8)):
        for explicit in (False, True):
            m, total = model(W=12, C_in=8, C_out=4, K=K, s=s, explicit=explicit)
            x = np.random.default_rng(1).standard_normal((1, 8, 12)).astype(np.float32)
            expected = onnxruntime.InferenceSession(
                m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            compiled = core.compile_model(core.read_model(m.SerializeToString(), b""), "CPU",
                                          {"INFERENCE_PRECISION_HINT": "f32"})
            got = compiled.create_infer_request().infer([x])[0]
            error = float(np.max(np.abs(got - expected)))
            form = "explicit pads" if explicit else "output_shape + SAME_UPPER"
            print(f"K={K:2d} s={s} total padding {total} ({'odd' if total % 2 else 'even'}), "
                  f"{form:26s}: max abs error vs onnxruntime {error:.2e} "
                  f"{'WRONG' if error > 1e-3 else 'ok'}")


if __name__ == "__main__":
    main()
