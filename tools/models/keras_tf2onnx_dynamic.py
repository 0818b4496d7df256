"""Export the keras.io MelGAN generator's upsampling path, full size, with a free time
axis through tf2onnx itself (architectures.keras_melgan_tf2onnx), as a Keras user would,
for `conv1d-transpose bench --model FILE --input x=1xFRAMESx80`.

    python tools/models/keras_tf2onnx_dynamic.py OUT.onnx

Needs the `reference` extra (tensorflow-cpu, tf2onnx).
"""
import sys

import onnx

from conv1d_transpose.architectures import keras_melgan_tf2onnx

_, proto = keras_melgan_tf2onnx()
onnx.save(proto, sys.argv[1])
print(f"wrote {sys.argv[1]}: {len(proto.graph.node)} nodes")
