"""conv1d_transpose/architectures.py: real decoders as their exporters write them.

- every reduced model is a valid ONNX model that onnxruntime runs to the published output
  shape with finite values;
- the torch-exported ones compute what the published code computes: a numpy forward pass
  written from the upstream modules (jik876/hifi-gan, facebookresearch/encodec and demucs
  v2), reading the weights by their state_dict names; the tf2onnx one computes what
  TensorFlow's own conv1d / conv1d_transpose compute with the same kernels;
- the full-size graphs have the published structure, node counts derived here from the
  hyperparameters.
"""
import collections
import json
import math

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from conv1d_transpose import ArgumentError
from conv1d_transpose.architectures import (ARCHITECTURES, REDUCED_SIZES, build,
                                            demucs_v2_decoder, encodec_decoder, hifigan_v1,
                                            reduced)
from conftest import tensorflow_or_skip


def hyperparameters(model):
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props["hyperparameters"])


def shape_of(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def random_feeds(model, seed=1):
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal(shape_of(i)).astype(np.float32)
            for i in model.graph.input}


def run_onnxruntime(model, feeds):
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def weights(model):
    return {t.name: numpy_helper.to_array(t).astype(np.float64)
            for t in model.graph.initializer}


def op_counts(model):
    return collections.Counter(node.op_type for node in model.graph.node)


def expected_output_shape(name, hp):
    """From the hyperparameters, as each paper states its hop or each layer's formula."""
    if name.startswith("hifigan"):
        return [hp["batch"], 1, hp["frames"] * math.prod(hp["upsample_rates"])]
    if name.startswith("encodec"):
        return [hp["batch"], 1, hp["frames"] * math.prod(hp["ratios"])]
    if name.startswith("demucs"):
        width = hp["frames"]
        for _ in range(hp["depth"]):  # valid Conv(context), then ConvTranspose(K, s)
            width = (width - hp["context"] + 1 - 1) * hp["stride"] + hp["kernel_size"]
        return [hp["batch"], hp["sources"] * hp["audio_channels"], width]
    if name.startswith("keras"):
        return [hp["batch"], hp["frames"] * math.prod(hp["upsample_rates"]), 1]
    raise AssertionError(name)


# --- numpy forms of the upstream torch modules (NCW, float64) --------------------------

def conv1d(x, weight, bias, dilation=1, pads=(0, 0)):
    """torch.nn.functional.conv1d, stride 1: weight [out, in, K]."""
    x = np.pad(x, ((0, 0), (0, 0), pads))
    kernel = weight.shape[2]
    width = x.shape[2] - dilation * (kernel - 1)
    y = sum(np.einsum("oc,ncw->now", weight[:, :, k], x[:, :, k * dilation:k * dilation + width])
            for k in range(kernel))
    return y + bias[None, :, None]


def conv_transpose1d(x, weight, bias, stride, pads=(0, 0)):
    """torch.nn.functional.conv_transpose1d: weight [in, out, K]; input w, tap k -> w*s + k."""
    batch, _, width = x.shape
    _, out_channels, kernel = weight.shape
    full = np.zeros((batch, out_channels, (width - 1) * stride + kernel))
    for k in range(kernel):
        full[:, :, k:k + (width - 1) * stride + 1:stride] += np.einsum("co,ncw->now",
                                                                       weight[:, :, k], x)
    full += bias[None, :, None]
    return full[:, :, pads[0]:full.shape[2] - pads[1]]


def leaky_relu(x, slope):
    return np.where(x > 0, x, slope * x)


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def hifigan_forward(w, hp, mel):
    """jik876/hifi-gan models.Generator.forward with ResBlock1."""
    kernels, dilations = hp["resblock_kernels"], hp["resblock_dilations"]
    x = conv1d(mel, w["conv_pre.weight"], w["conv_pre.bias"], pads=(3, 3))
    for i, (rate, kernel) in enumerate(zip(hp["upsample_rates"], hp["upsample_kernels"])):
        x = leaky_relu(x, 0.1)
        x = conv_transpose1d(x, w[f"ups.{i}.weight"], w[f"ups.{i}.bias"], rate,
                             ((kernel - rate) // 2,) * 2)
        xs = 0
        for j, (k, ds) in enumerate(zip(kernels, dilations)):
            block = f"resblocks.{i * len(kernels) + j}"
            h = x
            for m, d in enumerate(ds):
                t = conv1d(leaky_relu(h, 0.1), w[f"{block}.convs1.{m}.weight"],
                           w[f"{block}.convs1.{m}.bias"], d, ((k * d - d) // 2,) * 2)
                t = conv1d(leaky_relu(t, 0.1), w[f"{block}.convs2.{m}.weight"],
                           w[f"{block}.convs2.{m}.bias"], 1, ((k - 1) // 2,) * 2)
                h = t + h
            xs = xs + h
        x = xs / len(kernels)
    x = conv1d(leaky_relu(x, 0.01), w["conv_post.weight"], w["conv_post.bias"], pads=(3, 3))
    return np.tanh(x)


def encodec_forward(w, hp, z):
    """encodec SEANetDecoder.forward (SConv1d / SConvTranspose1d / SEANetResnetBlock)."""
    causal = hp["causal"]

    def sconv(x, name, kernel, dilation=1):
        total = (kernel - 1) * dilation
        right = 0 if causal else total // 2
        pads = (total - right, right)
        if hp["pad_mode"] == "reflect":  # pad1d(mode='reflect'): numpy's reflect is torch's
            x, pads = np.pad(x, ((0, 0), (0, 0), pads), mode="reflect"), (0, 0)
        return conv1d(x, w[f"{name}.conv.conv.weight"], w[f"{name}.conv.conv.bias"],
                      dilation, pads)

    index = 0
    x = sconv(z, "model.0", hp["kernel_size"])
    assert not hp["lstm"]
    for ratio in hp["ratios"]:
        index += 2
        x = conv_transpose1d(elu(x), w[f"model.{index}.convtr.convtr.weight"],
                             w[f"model.{index}.convtr.convtr.bias"], ratio)
        trim = ratio  # kernel 2r - stride r
        right = trim if causal else trim // 2
        x = x[:, :, trim - right:x.shape[2] - right]
        for j in range(hp["n_residual_layers"]):
            index += 1
            block = f"model.{index}"
            t = sconv(elu(x), f"{block}.block.1", hp["residual_kernel_size"],
                      hp["dilation_base"] ** j)
            t = sconv(elu(t), f"{block}.block.3", 1)
            shortcut = x if hp["true_skip"] else sconv(x, f"{block}.shortcut", 1)
            x = shortcut + t
    return sconv(elu(x), f"model.{index + 2}", hp["last_kernel_size"])


def demucs_forward(w, hp, feeds):
    """demucs v2 Demucs.forward, decoder half (skips as given, no resampling)."""
    x = feeds["x"]
    for layer, index in enumerate(reversed(range(hp["depth"]))):
        if hp["skips"]:
            x = x + feeds[f"skip{layer}"]
        x = conv1d(x, w[f"decoder.{layer}.0.weight"], w[f"decoder.{layer}.0.bias"])
        half = x.shape[1] // 2
        x = x[:, :half] / (1 + np.exp(-x[:, half:]))  # nn.GLU(dim=1)
        x = conv_transpose1d(x, w[f"decoder.{layer}.2.weight"], w[f"decoder.{layer}.2.bias"],
                             hp["stride"])
        if index > 0:
            x = np.maximum(x, 0)
    return x


def assert_close(actual, exact):
    # float32 through up to 80 layers against a float64 forward pass: measured errors are
    # ~3e-7 of the output's magnitude, so 1e-5 of it still catches a wrong slope or pad.
    scale = float(np.abs(exact).max()) or 1.0
    np.testing.assert_allclose(actual, exact, rtol=1e-4, atol=1e-5 * scale)


# --- tests ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ARCHITECTURES)
def test_reduced_model_is_valid_and_runs_to_the_published_shape(name):
    model = reduced(name)
    onnx.checker.check_model(model, full_check=True)
    hp = hyperparameters(model)
    assert {k: hp[k] for k in REDUCED_SIZES[name]} == \
        {k: list(v) if isinstance(v, tuple) else v for k, v in REDUCED_SIZES[name].items()}
    expected = expected_output_shape(name, hp)
    assert shape_of(model.graph.output[0]) == expected
    # Every intermediate has its inferred shape recorded, as torch's exporter writes them.
    produced = {out for node in model.graph.node for out in node.output if out} - {"y"}
    recorded = {v.name for v in model.graph.value_info}
    assert produced - recorded <= {o for n in model.graph.node if n.op_type == "LSTM"
                                   for o in n.output[1:]}
    y = run_onnxruntime(model, random_feeds(model))
    assert list(y.shape) == expected and y.dtype == np.float32
    assert np.isfinite(y).all() and y.std() > 0


@pytest.mark.parametrize("weight_norm", [False, True])
def test_hifigan_computes_what_the_published_generator_computes(weight_norm):
    model = reduced("hifigan-v1", weight_norm=weight_norm)
    feeds = random_feeds(model)
    if weight_norm:
        # g = ||v||: the effective weights are the plain model's, drawn from the same seed.
        assert_close(run_onnxruntime(model, feeds),
                     run_onnxruntime(reduced("hifigan-v1"), feeds))
        return
    exact = hifigan_forward(weights(model), hyperparameters(model), feeds["mel"])
    assert_close(run_onnxruntime(model, feeds), exact)


@pytest.mark.parametrize("causal, pad_mode, true_skip", [
    (True, "reflect", False),  # the published 24 kHz model
    (False, "reflect", True),
    (False, "zero", False),
])
def test_encodec_computes_what_the_published_decoder_computes(causal, pad_mode, true_skip):
    # Odd ratios put the non-causal trim off-centre; two residual layers give dilation 2.
    model = reduced("encodec-decoder", ratios=(3, 5, 2), causal=causal, pad_mode=pad_mode,
                    true_skip=true_skip, n_residual_layers=2)
    feeds = random_feeds(model)
    exact = encodec_forward(weights(model), hyperparameters(model), feeds["z"])
    assert_close(run_onnxruntime(model, feeds), exact)


def test_encodec_weight_norm_leaves_every_weight_computed_and_changes_nothing():
    model = reduced("encodec-decoder-weight-norm")
    initializers = {t.name for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    for node in convs:
        assert node.input[1] not in initializers, node.name
        mul = producers[node.input[1]]
        div = producers[mul.input[0]]
        assert (mul.op_type, div.op_type) == ("Mul", "Div")
        norm = producers[div.input[1]]
        assert norm.op_type == "ReduceL2" and norm.input[0] == div.input[0] in initializers
    assert op_counts(model)["ReduceL2"] == len(convs)
    plain = reduced("encodec-decoder")
    feeds = random_feeds(model)
    assert_close(run_onnxruntime(model, feeds), run_onnxruntime(plain, feeds))


def test_demucs_computes_what_the_published_decoder_computes():
    model = reduced("demucs-v2-decoder", skips=True, depth=4)
    assert [i.name for i in model.graph.input] == ["x", "skip0", "skip1", "skip2", "skip3"]
    feeds = random_feeds(model)
    exact = demucs_forward(weights(model), hyperparameters(model), feeds)
    assert_close(run_onnxruntime(model, feeds), exact)


@pytest.mark.parametrize("name, layers, direction", [
    ("encodec-decoder-lstm", 2, "forward"),
    ("demucs-v2-decoder-lstm", 2, "bidirectional"),
])
def test_lstm_variants_hold_one_lstm_node_per_layer(name, layers, direction):
    model = reduced(name)
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    assert len(nodes) == layers
    for node in nodes:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes.get("direction", b"forward").decode() == direction
    # Sequence-first, as torch's nn.LSTM runs: a Transpose [2, 0, 1] in front.
    first = next(n for n in model.graph.node if n.op_type == "Transpose")
    assert list(first.attribute[0].ints) == [2, 0, 1]


@pytest.mark.parametrize("kernel_size, first_kernel_size", [(16, 7), (9, 6)])
def test_keras_vocoder_computes_what_tensorflow_computes(kernel_size, first_kernel_size):
    # (9, 6): odd total padding, whose odd pixel TF and tf2onnx put at the end.
    tf = tensorflow_or_skip()
    model = reduced("keras-tf2onnx-vocoder", kernel_size=kernel_size,
                    first_kernel_size=first_kernel_size)
    hp = hyperparameters(model)
    w = weights(model)
    feeds = random_feeds(model)

    def keras_kernel(scope):  # ONNX [Cin, Cout, 1, K] / [Cout, Cin, 1, K] -> Keras (K, ., .)
        return w[f"{scope}/kernel"][:, :, 0, :].transpose(2, 1, 0)

    def bias(scope):
        return w[f"{scope}/bias"].reshape(-1)

    x = tf.constant(feeds["x"].astype(np.float64))
    x = tf.nn.conv1d(x, keras_kernel("model/conv1d"), 1, "SAME") + bias("model/conv1d")
    x = tf.nn.leaky_relu(x, hp["negative_slope"])
    for i, rate in enumerate(hp["upsample_rates"]):
        scope = f"model/conv1d_transpose_{i}"
        kernel = keras_kernel(scope)
        shape = [x.shape[0], x.shape[1] * rate, kernel.shape[1]]
        x = tf.nn.conv1d_transpose(x, kernel, shape, rate, "SAME") + bias(scope)
        x = tf.nn.leaky_relu(x, hp["negative_slope"])
    x = tf.nn.conv1d(x, keras_kernel("model/conv1d_1"), 1, "SAME") + bias("model/conv1d_1")
    assert_close(run_onnxruntime(model, feeds), np.tanh(x.numpy()))


def test_keras_vocoder_is_the_tf2onnx_two_dimensional_form():
    model = reduced("keras-tf2onnx-vocoder")
    hp = hyperparameters(model)
    nodes = list(model.graph.node)
    assert [n.op_type for n in nodes[:3]] == ["Unsqueeze", "Transpose", "Conv"]
    assert nodes[-1].op_type == "Transpose" and list(nodes[-1].attribute[0].ints) == [0, 2, 1]
    initializers = {t.name: t for t in model.graph.initializer}
    transposed = [n for n in nodes if n.op_type == "ConvTranspose"]
    for node, rate in zip(transposed, hp["upsample_rates"], strict=True):
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        k = hp["kernel_size"]
        assert attributes["kernel_shape"] == [1, k] and attributes["strides"] == [1, rate]
        assert attributes["pads"] == [0, (k - rate) // 2, 0, k - rate - (k - rate) // 2]
        assert len(node.input) == 2  # the bias is the Add after the Squeeze
        assert list(initializers[node.input[1]].dims)[2] == 1
    for node in nodes:
        if node.op_type in ("Unsqueeze", "Squeeze") and node is not nodes[0]:
            assert numpy_helper.to_array(initializers[node.input[1]]).tolist() == [2]


def expected_full_size_counts(name, hp):
    """Node counts that the published hyperparameters imply."""
    if name == "hifigan-v1":
        stages, kernels = len(hp["upsample_rates"]), len(hp["resblock_kernels"])
        convs_per_stage = sum(2 * len(d) for d in hp["resblock_dilations"])
        return {"Conv": 1 + stages * convs_per_stage + 1, "ConvTranspose": stages,
                "LeakyRelu": stages + stages * convs_per_stage + 1, "Tanh": 1,
                "Div": stages,
                "Add": stages * convs_per_stage // 2 + stages * (kernels - 1)}
    if name.startswith("encodec"):
        ratios, layers = len(hp["ratios"]), hp["n_residual_layers"]
        per_block = 2 + (0 if hp["true_skip"] else 1)
        convs = 1 + ratios * layers * per_block + 1
        counts = {"Conv": convs, "ConvTranspose": ratios, "Slice": ratios,
                  "Elu": ratios * (1 + 2 * layers) + 1,
                  "Pad": 2 + ratios * layers,  # the k>1 convs: first, last, residual k3
                  "LSTM": hp["lstm_layers"] if hp["lstm"] else 0,
                  "ReduceL2": convs + ratios if hp["weight_norm"] else 0}
        return counts
    if name.startswith("demucs"):
        depth = hp["depth"]
        return {"Conv": depth, "ConvTranspose": depth, "Split": depth, "Sigmoid": depth,
                "Relu": depth - 1,
                "LSTM": hp["lstm_layers"] if hp["lstm"] else 0}
    if name == "keras-tf2onnx-vocoder":
        stages = len(hp["upsample_rates"])
        return {"Conv": 2, "ConvTranspose": stages, "Unsqueeze": stages + 2,
                "Squeeze": stages + 2, "LeakyRelu": stages + 1, "Tanh": 1, "Transpose": 2}
    raise AssertionError(name)


# The full Demucs decoder with its BLSTM holds 175 M weights (700 MB): its structure is
# the one without LSTM plus what test_lstm_variants checks.
FULL_SIZE = [name for name in ARCHITECTURES if name != "demucs-v2-decoder-lstm"]


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_graph_has_the_published_structure(name):
    model = build(name)
    hp = hyperparameters(model)
    counts = op_counts(model)
    for op_type, count in expected_full_size_counts(name, hp).items():
        assert counts[op_type] == count, (op_type, counts)
    assert shape_of(model.graph.output[0]) == expected_output_shape(name, hp)
    strides = [onnx.helper.get_attribute_value(a)[-1] for n in model.graph.node
               if n.op_type == "ConvTranspose" for a in n.attribute if a.name == "strides"]
    rates = hp.get("upsample_rates") or hp.get("ratios") or [hp["stride"]] * hp["depth"]
    assert strides == list(rates)


def test_published_defaults():
    hifigan = hyperparameters(hifigan_v1(frames=4, initial_channels=32))
    assert (hifigan["upsample_rates"], hifigan["upsample_kernels"], hifigan["resblock_kernels"],
            hifigan["resblock_dilations"]) == ([8, 8, 2, 2], [16, 16, 4, 4], [3, 7, 11],
                                               [[1, 3, 5]] * 3)
    encodec = hyperparameters(encodec_decoder(frames=8, dimension=8, n_filters=2))
    assert (encodec["ratios"], encodec["causal"], encodec["true_skip"], encodec["pad_mode"]) == \
        ([8, 5, 4, 2], True, False, "reflect")
    demucs = hyperparameters(demucs_v2_decoder(frames=4, channels=2, depth=2))
    assert (demucs["kernel_size"], demucs["stride"], demucs["context"], demucs["growth"],
            demucs["glu"]) == (8, 4, 3, 2.0, True)


def test_full_size_hifigan_runs_on_onnxruntime():
    model = build("hifigan-v1", frames=8)
    y = run_onnxruntime(model, random_feeds(model))
    assert y.shape == (1, 1, 8 * 256) and np.isfinite(y).all()


def test_mistakes_name_the_argument():
    with pytest.raises(ArgumentError, match=r"architecture='melgan'.*hifigan-v1"):
        reduced("melgan")
    with pytest.raises(ArgumentError, match=r"upsample_kernels=\(16,\).*one kernel per"):
        hifigan_v1(upsample_kernels=(16,))
    with pytest.raises(ArgumentError, match=r"initial_channels=24.*multiple of 2\*\*4"):
        hifigan_v1(initial_channels=24)
    with pytest.raises(ArgumentError, match=r"pad_mode='replicate'"):
        encodec_decoder(pad_mode="replicate")
    with pytest.raises(ArgumentError, match=r"kernel_size=7.*>= every upsample rate \(8\)"):
        reduced("keras-tf2onnx-vocoder", kernel_size=7)
    with pytest.raises(ArgumentError, match=r"frames=4.*reflect pad of 6"):
        encodec_decoder(frames=4, dimension=8, n_filters=2)
    with pytest.raises(ArgumentError, match=r"frames=2.*context"):
        demucs_v2_decoder(frames=2)
