"""Export the keras.io MelGAN generator's upsampling path (architectures.
keras_tf2onnx_vocoder's layers, full size) with a free time axis through tf2onnx itself,
as a Keras user would, for `conv1d-transpose bench --model FILE --input x=1xFRAMESx80`.

    python tools/models/keras_tf2onnx_dynamic.py OUT.onnx

Needs the `reference` extra (tensorflow-cpu, tf2onnx). Random weights and biases.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
import onnx  # noqa: E402

keras = tf.keras
inputs = keras.Input((None, 80))
x = keras.layers.Conv1D(512, 7, padding="same")(inputs)
x = keras.layers.LeakyReLU(0.3)(x)
for channels, rate in zip((256, 128, 64, 32), (8, 8, 2, 2)):
    x = keras.layers.Conv1DTranspose(channels, 16, strides=rate, padding="same")(x)
    x = keras.layers.LeakyReLU(0.3)(x)
x = keras.layers.Conv1D(1, 7, padding="same", activation="tanh")(x)
model = keras.Model(inputs, x)
rng = np.random.default_rng(0)
model.set_weights([(rng.standard_normal(w.shape) / np.sqrt(max(w.size // w.shape[-1], 1)))
                   .astype(np.float32) for w in model.get_weights()])
signature = (tf.TensorSpec((1, None, 80), tf.float32, name="x"),)
proto, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x),
                                                     input_signature=signature),
                                         input_signature=signature, opset=17)
onnx.save(proto, sys.argv[1])
print(f"wrote {sys.argv[1]}: tf {tf.__version__}, tf2onnx {tf2onnx.__version__}, "
      f"{len(proto.graph.node)} nodes")
