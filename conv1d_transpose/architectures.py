"""Real audio decoders as ONNX graphs, from their published hyperparameters, random weights.

Each builder writes the graph its framework's exporter writes for that architecture, so
the importer, the placement and the bench see what users hand them:

- `hifigan_v1`: the HiFi-GAN V1 generator (jik876/hifi-gan), as `torch.onnx.export` writes it;
- `encodec_decoder`: the EnCodec 24 kHz SEANet decoder (facebookresearch/encodec), the same;
- `demucs_v2_decoder`: the decoder half of Demucs v2 (facebookresearch/demucs v2), the same;
- `keras_tf2onnx_vocoder`: a Keras `Conv1DTranspose` vocoder as tf2onnx writes it (2-D form);
  `keras_melgan_tf2onnx` has tf2onnx itself export it with a free time axis.

The torch-exported graphs are NCW, opset 17, float32, static shapes (batch 1 by default),
named like the TorchScript exporter names them (`/ups.0/ConvTranspose`, initializers
`ups.0.weight`). Weights are random (numpy `default_rng(seed)`), drawn as a freshly built
torch module draws them (uniform +-1/sqrt(fan_in)), so activations stay O(1) and tolerance
checks against onnxruntime mean something; no checkpoint is loaded.

`dynamic=True` gives a builder's input a symbolic time axis (`time`; the output's is
`samples`) and writes the shape arithmetic that `torch.onnx.export(..., dynamic_axes=...)`
writes for that module's Python (issue 30): EnCodec's padding computed from
Shape -> Gather -> Sub -> Cast -> Div -> Ceil -> ... -> Pad, Demucs' final view through a
Reshape whose shape comes from Shape. Those chains are what TVM 0.27's importer cannot
take (runtime/specialize.py folds them per input shape).

`ARCHITECTURES` names every builder and the variants of the issue's table (LSTM, weight
norm in the graph); `reduced(name)` builds a small version that runs in milliseconds.
"""
from __future__ import annotations

import functools
import json
import math
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph.errors import ArgumentError

OPSET = 17
# torch.onnx.export at opset 17 writes IR version 8; so do we, for the same consumers.
IR_VERSION = 8
PRODUCER = "conv1d_transpose.architectures"


class _GraphBuilder:
    """Nodes and initializers, named the way torch's TorchScript exporter names them."""

    def __init__(self, seed: int, weight_norm: bool = False):
        self.rng = np.random.default_rng(seed)
        self.weight_norm = weight_norm
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self._used: dict[str, int] = {}
        self._constants = 0

    def initializer(self, name: str, array: np.ndarray) -> str:
        assert name not in self.initializers, name
        self.initializers[name] = np.ascontiguousarray(array)
        return name

    def constant(self, values, dtype=np.int64) -> str:
        """An anonymous constant (shapes, axes, pads), named like torch's folded ones."""
        self._constants += 1
        return self.initializer(f"onnx::Constant_{self._constants}", np.array(values, dtype))

    def node(self, op_type: str, inputs: Sequence[str], scope: str = "", outputs: int = 1,
             **attributes) -> str | list[str]:
        base = f"/{scope}/{op_type}" if scope else f"/{op_type}"
        count = self._used.get(base, 0)
        self._used[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        names = [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name,
                                           **attributes))
        return names[0] if outputs == 1 else names

    def constant_node(self, values, scope: str, dtype=np.int64) -> str:
        """A `Constant` node, as torch writes the literals of shape arithmetic (its constant
        folding turns only the results of folded nodes into initializers)."""
        return self.node("Constant", [], scope, value=numpy_helper.from_array(
            np.array(values, dtype), "value"))

    def size(self, x: str, axis: int, scope: str) -> str:
        """`x.shape[axis]` under torch's tracer: Shape -> Gather of a 0-d index (a negative
        axis made positive: the exporter knows the rank), a 0-d int64."""
        return self.node("Gather", [self.node("Shape", [x], scope),
                                    self.constant_node(axis, scope)], scope, axis=0)

    def trim_end(self, x: str, start: int, end_trim, scope: str) -> str:
        """`x[..., start:x.shape[-1] - end_trim]` as torch exports it with a dynamic width:
        the end from Shape, Unsqueezed into Slice's 1-D `ends`."""
        end = self.node("Sub", [self.size(x, 2, scope), self.constant_node(end_trim, scope)],
                        scope)
        end = self.node("Unsqueeze", [end, self.constant_node([0], scope)], scope)
        return self.node("Slice", [x, self.constant_node([start], scope), end,
                                   self.constant_node([2], scope),
                                   self.constant_node([1], scope)], scope)

    def dynamic_pad(self, x: str, left: int, right, scope: str, mode: str) -> str:
        """`F.pad(x, (left, right))` on a 3-D NCW tensor with `right` a traced 0-d int64:
        torch's `_prepare_onnx_paddings` (symbolic_opset11) turns the list into ONNX's
        pads at run time: Concat -> ConstantOfShape of the missing zeros -> Reshape to
        pairs -> Slice reversing them -> Transpose -> Reshape -> Cast -> Pad."""
        pad = self.node("Concat", [self.constant_node([left], scope),
                                   self.node("Unsqueeze", [right, self.constant_node(
                                       [0], scope)], scope)], scope, axis=0)
        pad_length = self.node("Gather", [self.node("Shape", [pad], scope),
                                          self.constant_node([0], scope)], scope, axis=0)
        extension = self.node("Sub", [self.constant_node(6, scope), pad_length], scope)
        pad = self.node("Cast", [pad], scope, to=TensorProto.INT64)
        zeros = self.node("ConstantOfShape", [extension], scope,
                          value=numpy_helper.from_array(np.zeros(1, np.int64), "value"))
        pads = self.node("Concat", [pad, zeros], scope, axis=0)
        pads = self.node("Reshape", [pads, self.constant_node([-1, 2], scope)], scope)
        pads = self.node("Slice", [pads, self.constant_node([-1], scope),
                                   self.constant_node([-(2 ** 63 - 1)], scope),
                                   self.constant_node([0], scope),
                                   self.constant_node([-1], scope)], scope)
        pads = self.node("Transpose", [pads], scope, perm=[1, 0])
        pads = self.node("Reshape", [pads, self.constant_node([-1], scope)], scope)
        pads = self.node("Cast", [pads], scope, to=TensorProto.INT64)
        return self.node("Pad", [x, pads], scope, mode=mode)

    def uniform(self, shape: Sequence[int], bound: float) -> np.ndarray:
        # float32 draws: the full Demucs decoder has 56 M weights.
        return (self.rng.random(tuple(shape), dtype=np.float32) * 2 - 1) * np.float32(bound)

    def weight(self, scope: str, array: np.ndarray) -> str:
        """The weight as an initializer, or (weight norm) the subgraph g * v / ||v|| that
        torch's `_weight_norm` symbolic writes: Mul(Div(v, ReduceL2(v)), g), the norm over
        every axis but 0, g = ||v|| (so the effective weight equals v, as at torch's init)."""
        parameter = _parameter(scope)
        if not self.weight_norm:
            return self.initializer(f"{parameter}.weight", array)
        axes = list(range(1, array.ndim))
        g = np.sqrt(np.sum(np.square(array, dtype=np.float64), axis=tuple(axes),
                           keepdims=True)).astype(np.float32)
        g_name = self.initializer(f"{parameter}.parametrizations.weight.original0", g)
        v_name = self.initializer(f"{parameter}.parametrizations.weight.original1", array)
        norm = self.node("ReduceL2", [v_name], scope, axes=axes, keepdims=1)
        return self.node("Mul", [self.node("Div", [v_name, norm], scope), g_name], scope)

    def conv(self, x: str, scope: str, cin: int, cout: int, kernel: int, *, stride: int = 1,
             dilation: int = 1, pads: tuple[int, int] = (0, 0), bias: bool = True,
             transpose: bool = False, scale: float | None = None) -> str:
        """Conv1d or ConvTranspose1d as torch exports it (weights [cout, cin, K] or
        [cin, cout, K]); `scale` divides weight and bias (Demucs' rescale_conv)."""
        shape = (cin, cout, kernel) if transpose else (cout, cin, kernel)
        bound = 1 / math.sqrt(shape[1] * kernel)  # torch: fan_in = weight.size(1) * K
        weight = self.uniform(shape, bound)
        bias_values = self.uniform((cout,), bound) if bias else None
        if scale is not None:
            factor = np.float32(math.sqrt(float(weight.std()) / scale))
            weight /= factor
            if bias_values is not None:
                bias_values /= factor
        inputs = [x, self.weight(scope, weight)]
        if bias_values is not None:
            inputs.append(self.initializer(f"{_parameter(scope)}.bias", bias_values))
        op_type = "ConvTranspose" if transpose else "Conv"
        return self.node(op_type, inputs, scope, dilations=[dilation], group=1,
                         kernel_shape=[kernel], pads=list(pads), strides=[stride])

    def lstm(self, x: str, scope: str, input_size: int, hidden: int, batch: int,
             bidirectional: bool) -> str:
        """One nn.LSTM layer on [T, N, input_size] -> [T, N, directions * hidden].

        torch writes one ONNX LSTM node per layer (gates in ONNX's i, o, f, c order, zero
        initial states as initializers), then drops the directions axis: Squeeze for one
        direction, Transpose + Reshape for two."""
        directions = 2 if bidirectional else 1
        bound = 1 / math.sqrt(hidden)
        parameter = _parameter(scope)
        w = self.initializer(f"{parameter}.W",
                             self.uniform((directions, 4 * hidden, input_size), bound))
        r = self.initializer(f"{parameter}.R",
                             self.uniform((directions, 4 * hidden, hidden), bound))
        b = self.initializer(f"{parameter}.B", self.uniform((directions, 8 * hidden), bound))
        zeros = np.zeros((directions, batch, hidden), np.float32)
        h0 = self.initializer(f"{parameter}.initial_h", zeros)
        c0 = self.initializer(f"{parameter}.initial_c", zeros)
        attributes = {"hidden_size": hidden}
        if bidirectional:
            attributes["direction"] = "bidirectional"
        y, _, _ = self.node("LSTM", [x, w, r, b, "", h0, c0], scope, outputs=3, **attributes)
        if not bidirectional:
            return self.node("Squeeze", [y, self.constant([1])], scope)
        y = self.node("Transpose", [y], scope, perm=[0, 2, 1, 3])
        return self.node("Reshape", [y, self.constant([0, 0, -1])], scope)

    def model(self, inputs: Sequence[onnx.ValueInfoProto], output: str,
              output_shape: Sequence, architecture: str, hyperparameters: dict,
              doc: str) -> onnx.ModelProto:
        last = self.nodes[-1]
        assert last.output[0] == output, (last.output, output)
        last.output[0] = "y"
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))]
        value_info = self._check_and_infer(inputs, outputs, architecture)
        graph = helper.make_graph(self.nodes, architecture, list(inputs), outputs,
                                  value_info=value_info)
        for name, array in self.initializers.items():
            # Filled in place: the full Demucs decoder holds 224 MB of weights, and
            # make_graph(initializer=...) would copy each tensor once more.
            tensor = graph.initializer.add()
            tensor.name = name
            tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
            tensor.dims.extend(array.shape)
            tensor.raw_data = array.tobytes()
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  ir_version=IR_VERSION, producer_name=PRODUCER, doc_string=doc)
        helper.set_model_props(model, {
            "architecture": architecture,
            "hyperparameters": json.dumps(hyperparameters, sort_keys=True)})
        return model

    def _check_and_infer(self, inputs, outputs, architecture) -> list[onnx.ValueInfoProto]:
        """Check the graph and infer (strictly) every intermediate's type and shape, as
        torch's exporter records them, on a skeleton whose weights are declared inputs
        instead of data: the checker and shape inference serialize the whole model, which
        takes seconds for the full Demucs decoder. Small constants keep their values."""
        weights, constants = [], []
        for name, array in self.initializers.items():
            if array.dtype == np.float32 and array.size > 16:
                weights.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                             list(array.shape)))
            else:
                constants.append(numpy_helper.from_array(array, name))
        skeleton = helper.make_model(
            helper.make_graph(self.nodes, architecture, list(inputs) + weights, outputs,
                              initializer=constants),
            opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
        onnx.checker.check_model(skeleton)
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=True,
                                                     strict_mode=True)
        return list(inferred.graph.value_info)


def _parameter(scope: str) -> str:
    """A module's parameter prefix from its node scope: '/resblocks.0/convs1.2/Conv' holds
    'resblocks.0.convs1.2.weight', as in torch's state_dict."""
    return scope.replace("/", ".")


def _input(name: str, shape: Sequence) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


# The symbolic axes of `dynamic=True` models, named as a torch.onnx.export call with
# dynamic_axes={"mel": {2: "time"}, "y": {2: "samples"}} names them.
TIME, SAMPLES = "time", "samples"


def _time(frames: int, dynamic: bool):
    return TIME if dynamic else frames


def _require(condition: bool, argument: str, value, allowed: str) -> None:
    if not condition:
        raise ArgumentError(f"{argument}={value!r} is not supported; allowed: {allowed}")


def _positive(**values) -> None:
    for argument, value in values.items():
        _require(isinstance(value, (int, np.integer)) and value > 0, argument, value,
                 "a positive int")


def conv_transpose_width(width: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
    """torch/ONNX ConvTranspose1d output width (dilation 1, no output_padding)."""
    return (width - 1) * stride + kernel - pads[0] - pads[1]


def get_padding(kernel: int, dilation: int = 1) -> int:
    """HiFi-GAN's utils.get_padding: the symmetric pad that keeps the width."""
    return (kernel * dilation - dilation) // 2


def hifigan_v1(frames: int = 50, mel_channels: int = 80, initial_channels: int = 512,
               upsample_rates: Sequence[int] = (8, 8, 2, 2),
               upsample_kernels: Sequence[int] = (16, 16, 4, 4),
               resblock_kernels: Sequence[int] = (3, 7, 11),
               resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
               weight_norm: bool = False, batch: int = 1, seed: int = 0,
               dynamic: bool = False) -> onnx.ModelProto:
    """The HiFi-GAN V1 generator: mel [N, mel_channels, frames] -> audio [N, 1, frames*256].

    Source: Kong, Kim, Bae, "HiFi-GAN: Generative Adversarial Networks for Efficient and
    High Fidelity Speech Synthesis", NeurIPS 2020; code jik876/hifi-gan, `models.Generator`
    with `config_v1.json`: upsample_rates 8,8,2,2, upsample_kernel_sizes 16,16,4,4,
    upsample_initial_channel 512, resblock "1", resblock_kernel_sizes 3,7,11,
    resblock_dilation_sizes [1,3,5] x 3; 80 mel bins, 22.05 kHz, hop 256.

    Graph: conv_pre Conv(mel -> 512, k7, pad 3) -> per upsample i: LeakyRelu(0.1),
    ConvTranspose(ch -> ch/2, k=upsample_kernels[i], s=rate, pads (k-s)//2), then the MRF:
    the sum over kernels of ResBlock1 (per dilation d: LeakyRelu(0.1), Conv(k, dilation d,
    pad get_padding(k, d)), LeakyRelu(0.1), Conv(k, pad get_padding(k)), Add the input),
    divided by the number of kernels (Div) -> LeakyRelu(0.01: the official code calls
    F.leaky_relu with torch's default slope) -> conv_post Conv(ch -> 1, k7, pad 3) -> Tanh.
    Every conv has a bias. Full size: 74 Conv, 4 ConvTranspose, 13.9 M weights.

    `weight_norm=True` leaves torch's weight-norm subgraph on every conv (the published
    model trains with it; inference exports usually call remove_weight_norm first).
    Weights: torch's default init, not the repo's N(0, 0.01) `init_weights`, so that the
    random model's activations do not vanish.

    `dynamic=True`: the mel's time axis is symbolic (`time`, the audio's `samples`); the
    generator's forward reads no shape, so its export has no shape arithmetic.
    """
    _positive(frames=frames, mel_channels=mel_channels, initial_channels=initial_channels,
              batch=batch)
    _require(len(upsample_rates) == len(upsample_kernels) > 0, "upsample_kernels",
             tuple(upsample_kernels), f"one kernel per upsample rate ({len(upsample_rates)})")
    _require(len(resblock_kernels) == len(resblock_dilations) > 0, "resblock_dilations",
             tuple(map(tuple, resblock_dilations)),
             f"one dilation tuple per resblock kernel ({len(resblock_kernels)})")
    _require(initial_channels % 2 ** len(upsample_rates) == 0, "initial_channels",
             initial_channels, f"a multiple of 2**{len(upsample_rates)} (halved per upsample)")
    hyperparameters = dict(
        frames=frames, mel_channels=mel_channels, initial_channels=initial_channels,
        upsample_rates=list(upsample_rates), upsample_kernels=list(upsample_kernels),
        resblock_kernels=list(resblock_kernels),
        resblock_dilations=[list(d) for d in resblock_dilations], weight_norm=weight_norm,
        batch=batch, seed=seed, dynamic=dynamic)
    g = _GraphBuilder(seed, weight_norm)
    x = g.conv("mel", "conv_pre", mel_channels, initial_channels, 7, pads=(3, 3))
    width, channels = frames, initial_channels
    num_kernels = len(resblock_kernels)
    divisor = g.initializer("onnx::Div_num_kernels", np.array(num_kernels, np.float32))
    for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernels)):
        x = g.node("LeakyRelu", [x], "", alpha=0.1)
        pad = (kernel - rate) // 2
        x = g.conv(x, f"ups.{i}", channels, channels // 2, kernel, stride=rate, pads=(pad, pad),
                   transpose=True)
        channels //= 2
        width = conv_transpose_width(width, kernel, rate, (pad, pad))
        total = None
        for j, (k, dilations) in enumerate(zip(resblock_kernels, resblock_dilations)):
            scope = f"resblocks.{i * num_kernels + j}"
            h = x
            for m, d in enumerate(dilations):
                t = g.node("LeakyRelu", [h], scope, alpha=0.1)
                t = g.conv(t, f"{scope}/convs1.{m}", channels, channels, k, dilation=d,
                           pads=(get_padding(k, d),) * 2)
                t = g.node("LeakyRelu", [t], scope, alpha=0.1)
                t = g.conv(t, f"{scope}/convs2.{m}", channels, channels, k,
                           pads=(get_padding(k),) * 2)
                h = g.node("Add", [t, h], scope)
            total = h if total is None else g.node("Add", [total, h], "")
        x = g.node("Div", [total, divisor], "")
    x = g.node("LeakyRelu", [x], "", alpha=0.01)
    x = g.conv(x, "conv_post", channels, 1, 7, pads=(3, 3))
    x = g.node("Tanh", [x], "")
    return g.model([_input("mel", (batch, mel_channels, _time(frames, dynamic)))], x,
                   (batch, 1, SAMPLES if dynamic else width), "hifigan-v1", hyperparameters, hifigan_v1.__doc__.split("\n")[0])


def encodec_decoder(frames: int = 75, dimension: int = 128, n_filters: int = 32,
                    ratios: Sequence[int] = (8, 5, 4, 2), kernel_size: int = 7,
                    last_kernel_size: int = 7, residual_kernel_size: int = 3,
                    dilation_base: int = 2, n_residual_layers: int = 1, compress: int = 2,
                    causal: bool = True, true_skip: bool = False, pad_mode: str = "reflect",
                    lstm: bool = False, lstm_layers: int = 2, weight_norm: bool = False,
                    batch: int = 1, seed: int = 0, dynamic: bool = False) -> onnx.ModelProto:
    """The EnCodec 24 kHz SEANet decoder: z [N, 128, frames] -> audio [N, 1, frames*320].

    Source: Defossez, Copet, Synnaeve, Adi, "High Fidelity Neural Audio Compression", 2022;
    code facebookresearch/encodec, `modules/seanet.py` `SEANetDecoder` as
    `EncodecModel.encodec_model_24khz` builds it: channels 1, dimension 128, n_filters 32,
    ratios 8,5,4,2, kernel_size 7, last_kernel_size 7, residual_kernel_size 3,
    dilation_base 2, n_residual_layers 1, compress 2, ELU(alpha 1), causal=True,
    pad_mode 'reflect', true_skip=False (the shortcut is a k1 conv), norm 'weight_norm',
    lstm 2; 75 frames = 1 s at 24 kHz.

    Graph: Conv(dimension -> 16*n_filters, k7) [-> SLSTM if `lstm`: Transpose to
    [W, N, C], `lstm_layers` LSTM nodes (hidden = channels), Add the skip, Transpose back]
    -> per ratio r: Elu, ConvTranspose(C -> C/2, k=2r, s=r) and a Slice that trims
    k - s = r samples (causal: all on the right, as trim_right_ratio 1.0 does; non-causal:
    right = (k-s)//2, left = the rest, as `SConvTranspose1d` does), then per residual layer
    j the SEANetResnetBlock: Elu, Conv(C -> C/compress, k3, dilation dilation_base**j),
    Elu, Conv(C/compress -> C, k1), Add the shortcut (a k1 Conv, or the identity with
    `true_skip`) -> Elu -> Conv(n_filters -> 1, k7). Every stride-1 conv of kernel > 1 is
    preceded by `SConv1d`'s padding: Pad(mode='reflect') with (k-1)*d on the left (causal)
    or split as SConv1d splits it; `pad_mode='zero'` puts it in the Conv's pads instead.
    Full size without LSTM: 14 Conv, 4 ConvTranspose, 3.2 M weights (7.4 M with it).

    `lstm=False` is the issue's "no LSTM" variant (the published model has `lstm_layers=2`);
    `weight_norm=True` leaves torch's g * v / ||v|| subgraph in front of every conv and
    transposed conv, as the published model holds it.

    `dynamic=True` (symbolic `time`): what `modules/conv.py` computes from `x.shape[-1]`
    is in the graph, as the tracer records it. Every SConv1d (k1 included) pads by
    `get_extra_padding_for_conv1d`: length = Gather(Shape(x), 2) -> Sub k -> Add
    padding_total -> Cast float -> Div stride -> Add 1 -> Ceil -> Cast int64 -> Sub 1 ->
    Mul stride -> Add (k - padding_total) -> Sub length (0 at stride 1, but computed),
    then `pad1d`'s F.pad through `_prepare_onnx_paddings` (Pad's pads from that value)
    and its `padded[..., :end]` Slice; each SConvTranspose1d's `unpad1d` is a Slice whose
    end comes from Shape. `frames` then only checks the reflect pads.
    """
    _positive(frames=frames, dimension=dimension, n_filters=n_filters, kernel_size=kernel_size,
              last_kernel_size=last_kernel_size, residual_kernel_size=residual_kernel_size,
              dilation_base=dilation_base, compress=compress, batch=batch)
    _require(len(ratios) > 0 and all(r > 0 for r in ratios), "ratios", tuple(ratios),
             "one or more positive upsampling ratios")
    _require(pad_mode in ("reflect", "zero"), "pad_mode", pad_mode, "'reflect', 'zero'")
    _require(not lstm or lstm_layers > 0, "lstm_layers", lstm_layers, "a positive int")
    _require(n_filters % compress == 0, "compress", compress, f"a divisor of n_filters "
             f"({n_filters}): the residual branch has C // compress channels")
    hyperparameters = dict(
        frames=frames, dimension=dimension, n_filters=n_filters, ratios=list(ratios),
        kernel_size=kernel_size, last_kernel_size=last_kernel_size,
        residual_kernel_size=residual_kernel_size, dilation_base=dilation_base,
        n_residual_layers=n_residual_layers, compress=compress, causal=causal,
        true_skip=true_skip, pad_mode=pad_mode, lstm=lstm, lstm_layers=lstm_layers,
        weight_norm=weight_norm, batch=batch, seed=seed, dynamic=dynamic)
    g = _GraphBuilder(seed, weight_norm)
    width = frames

    def sconv(x: str, scope: str, cin: int, cout: int, kernel: int, dilation: int = 1) -> str:
        # SConv1d, stride 1: get_extra_padding_for_conv1d is 0, so the width is kept.
        total = (kernel - 1) * dilation
        right = 0 if causal else total // 2
        pads = (total - right, right)
        if dynamic:
            x = torch_pad1d(x, scope, kernel, dilation, pads)
            return g.conv(x, f"{scope}/conv/conv", cin, cout, kernel, dilation=dilation)
        if pad_mode == "reflect" and total:
            _require(max(pads) < width, "frames", frames,
                     f"enough for a reflect pad of {max(pads)} at width {width}")
            x = g.node("Pad", [x, g.constant([0, 0, pads[0], 0, 0, pads[1]])], scope,
                       mode="reflect")
            pads = (0, 0)
        return g.conv(x, f"{scope}/conv/conv", cin, cout, kernel, dilation=dilation, pads=pads)

    def torch_pad1d(x: str, scope: str, kernel: int, dilation: int, pads) -> str:
        # SConv1d.forward: get_extra_padding_for_conv1d(x, k, stride 1, padding_total),
        # then pad1d(x, (left, right + extra), pad_mode); "zero" is F.pad's constant mode.
        padding_total, stride = (kernel - 1) * dilation, 1
        _require(pad_mode != "reflect" or max(pads) < width, "frames", frames,
                 f"enough for a reflect pad of {max(pads)} at width {width}")
        length = g.size(x, 2, scope)
        n_frames = g.node("Add", [g.node("Sub", [length, g.constant_node(kernel, scope)],
                                        scope),
                                 g.constant_node(padding_total, scope)], scope)
        n_frames = g.node("Cast", [n_frames], scope, to=TensorProto.FLOAT)
        n_frames = g.node("Div", [n_frames, g.constant_node(float(stride), scope, np.float32)],
                         scope)
        n_frames = g.node("Add", [n_frames, g.constant_node(1.0, scope, np.float32)], scope)
        n_frames = g.node("Cast", [g.node("Ceil", [n_frames], scope)], scope,
                         to=TensorProto.INT64)
        ideal = g.node("Sub", [n_frames, g.constant_node(1, scope)], scope)
        ideal = g.node("Mul", [ideal, g.constant_node(stride, scope)], scope)
        ideal = g.node("Add", [ideal, g.constant_node(kernel - padding_total, scope)], scope)
        extra = g.node("Sub", [ideal, length], scope)
        if pads[1]:
            extra = g.node("Add", [g.constant_node(pads[1], scope), extra], scope)
        mode = "reflect" if pad_mode == "reflect" else "constant"
        x = g.dynamic_pad(x, pads[0], extra, scope, mode)
        return g.trim_end(x, 0, 0, scope)  # pad1d's padded[..., :end], extra_pad 0

    index = 0
    channels = 2 ** len(ratios) * n_filters
    x = sconv("z", f"model.{index}", dimension, channels, kernel_size)
    if lstm:
        index += 1
        scope = f"model.{index}/lstm"
        sequence = g.node("Transpose", [x], f"model.{index}", perm=[2, 0, 1])
        y = sequence
        for layer in range(lstm_layers):
            y = g.lstm(y, f"{scope}/layer.{layer}", channels, channels, batch, bidirectional=False)
        y = g.node("Add", [y, sequence], f"model.{index}")
        x = g.node("Transpose", [y], f"model.{index}", perm=[1, 2, 0])
    for ratio in ratios:
        index += 1
        x = g.node("Elu", [x], f"model.{index}", alpha=1.0)
        index += 1
        kernel = 2 * ratio
        x = g.conv(x, f"model.{index}/convtr/convtr", channels, channels // 2, kernel,
                   stride=ratio, transpose=True)
        channels //= 2
        width = conv_transpose_width(width, kernel, ratio, (0, 0))
        trim = kernel - ratio
        right = trim if causal else trim // 2
        left = trim - right
        if trim and dynamic:
            x = g.trim_end(x, left, right, f"model.{index}")  # unpad1d
            width -= trim
        elif trim:
            x = g.node("Slice", [x, g.constant([left]), g.constant([width - right]),
                                 g.constant([2]), g.constant([1])], f"model.{index}")
            width -= trim
        for j in range(n_residual_layers):
            index += 1
            scope = f"model.{index}"
            hidden = channels // compress
            t = g.node("Elu", [x], f"{scope}/block.0", alpha=1.0)
            t = sconv(t, f"{scope}/block.1", channels, hidden, residual_kernel_size,
                      dilation_base ** j)
            t = g.node("Elu", [t], f"{scope}/block.2", alpha=1.0)
            t = sconv(t, f"{scope}/block.3", hidden, channels, 1)
            shortcut = x if true_skip else sconv(x, f"{scope}/shortcut", channels, channels, 1)
            x = g.node("Add", [shortcut, t], scope)
    index += 1
    x = g.node("Elu", [x], f"model.{index}", alpha=1.0)
    x = sconv(x, f"model.{index + 1}", n_filters, 1, last_kernel_size)
    return g.model([_input("z", (batch, dimension, _time(frames, dynamic)))], x,
                   (batch, 1, SAMPLES if dynamic else width), "encodec-decoder", hyperparameters, encodec_decoder.__doc__.split("\n")[0])


def demucs_v2_decoder(frames: int = 16, sources: int = 4, audio_channels: int = 2,
                      channels: int = 64, growth: float = 2.0, depth: int = 6,
                      kernel_size: int = 8, stride: int = 4, context: int = 3,
                      glu: bool = True, lstm: bool = False, lstm_layers: int = 2,
                      skips: bool = False, rescale: float = 0.1, batch: int = 1,
                      seed: int = 0, dynamic: bool = False) -> onnx.ModelProto:
    """The Demucs v2 decoder: x [N, 2048, frames] -> [N, sources*audio_channels, W].

    Source: Defossez, Usunier, Bottou, Bach, "Music Source Separation in the Waveform
    Domain", 2019; code facebookresearch/demucs v2, `demucs/model.py` `Demucs` defaults:
    sources 4, audio_channels 2, channels 64, growth 2, depth 6, rewrite=True, glu=True,
    kernel_size 8, stride 4, context 3, lstm_layers 2 (a BLSTM), rescale 0.1.

    Graph, from the deepest layer up (encoder widths channels * growth**i, 64..2048 at full
    size): [if `lstm`: Transpose to [W, N, C], `lstm_layers` bidirectional LSTM nodes
    (hidden = C), Linear(2C -> C) as MatMul + Add, Transpose back] -> per decoder layer:
    [Add the skip] -> Conv(C -> 2C, k=context, no padding) -> GLU over channels (Split,
    Sigmoid, Mul; Relu on C -> C with glu=False) -> ConvTranspose(C -> C_out, k=8, s=4, no
    padding) -> Relu, except after the last layer, whose C_out is sources*audio_channels.
    Full size: 6 Conv, 6 ConvTranspose, 56 M weights (224 MB); the default 16 frames give
    a 60076-sample output (0.68 s at the model's internal 88.2 kHz).

    Left out: the encoder, the julius resampling around the model and the final
    view to [N, sources, audio_channels, W] (the output stays NCW). The U-Net skips are
    left out by default (one input); `skips=True` adds them as graph inputs `skip0`
    (deepest) .. `skip{depth-1}`, already center-trimmed to the decoder's width (the
    trim happens on the encoder side, outside this graph). Weights: torch's default init
    then Demucs' rescale_conv (std towards `rescale`).

    `dynamic=True` (symbolic `time`; skips `width0`..): the final view is kept, as
    `Demucs.forward` writes it: `x.view(x.size(0), len(self.sources),
    self.audio_channels, x.size(-1))`, exported as Gather(Shape) -> Unsqueeze -> Concat
    -> Reshape; the output is [N, sources, audio_channels, samples].
    """
    _positive(frames=frames, sources=sources, audio_channels=audio_channels,
              channels=channels, depth=depth, kernel_size=kernel_size, stride=stride,
              context=context, batch=batch)
    _require(growth > 0, "growth", growth, "a positive number")
    _require(not lstm or lstm_layers > 0, "lstm_layers", lstm_layers, "a positive int")
    _require(frames >= context, "frames", frames, f">= context ({context})")
    hyperparameters = dict(
        frames=frames, sources=sources, audio_channels=audio_channels, channels=channels,
        growth=growth, depth=depth, kernel_size=kernel_size, stride=stride, context=context,
        glu=glu, lstm=lstm, lstm_layers=lstm_layers, skips=skips, rescale=rescale,
        batch=batch, seed=seed, dynamic=dynamic)
    widths = [channels]  # encoder layer i outputs widths[i] channels
    for _ in range(depth - 1):
        widths.append(int(growth * widths[-1]))
    g = _GraphBuilder(seed)
    scale = rescale or None
    x, width = "x", frames
    inputs = [_input("x", (batch, widths[-1], _time(frames, dynamic)))]
    if lstm:
        c = widths[-1]
        y = g.node("Transpose", [x], "lstm", perm=[2, 0, 1])
        for layer in range(lstm_layers):
            y = g.lstm(y, f"lstm/lstm/layer.{layer}", c if layer == 0 else 2 * c, c, batch,
                       bidirectional=True)
        bound = 1 / math.sqrt(2 * c)
        weight = g.initializer("onnx::MatMul_lstm.linear", g.uniform((2 * c, c), bound))
        y = g.node("MatMul", [y, weight], "lstm/linear")
        y = g.node("Add", [y, g.initializer("lstm.linear.bias", g.uniform((c,), bound))],
                   "lstm/linear")
        x = g.node("Transpose", [y], "lstm", perm=[1, 2, 0])
    for layer, index in enumerate(reversed(range(depth))):
        c = widths[index]
        out = widths[index - 1] if index > 0 else sources * audio_channels
        scope = f"decoder.{layer}"
        if skips:
            name = f"skip{layer}"
            inputs.append(_input(name, (batch, c, f"width{layer}" if dynamic else width)))
            x = g.node("Add", [x, name], "")
        _require(width >= context, "frames", frames,
                 f"enough for the k{context} conv of decoder layer {layer} (width {width})")
        scale_ch = 2 if glu else 1
        x = g.conv(x, f"{scope}/0", c, scale_ch * c, context, scale=scale)
        width -= context - 1
        if glu:
            first, second = g.node("Split", [x, g.constant([c, c])], f"{scope}/1", outputs=2,
                                   axis=1)
            x = g.node("Mul", [first, g.node("Sigmoid", [second], f"{scope}/1")], f"{scope}/1")
        else:
            x = g.node("Relu", [x], f"{scope}/1")
        x = g.conv(x, f"{scope}/2", c, out, kernel_size, stride=stride, transpose=True,
                   scale=scale)
        width = conv_transpose_width(width, kernel_size, stride, (0, 0))
        if index > 0:
            x = g.node("Relu", [x], f"{scope}/3")
    output_shape = (batch, sources * audio_channels, width)
    if dynamic:
        view = [g.node("Unsqueeze", [g.size(x, 0, ""), g.constant_node([0], "")], ""),
                g.constant_node([sources], ""), g.constant_node([audio_channels], ""),
                g.node("Unsqueeze", [g.size(x, 2, ""), g.constant_node([0], "")], "")]
        x = g.node("Reshape", [x, g.node("Concat", view, "", axis=0)], "")
        output_shape = (batch, sources, audio_channels, SAMPLES)
    return g.model(inputs, x, output_shape, "demucs-v2-decoder",
                   hyperparameters, demucs_v2_decoder.__doc__.split("\n")[0])


def keras_tf2onnx_vocoder(frames: int = 32, mel_channels: int = 80,
                          initial_channels: int = 512,
                          channels: Sequence[int] = (256, 128, 64, 32),
                          upsample_rates: Sequence[int] = (8, 8, 2, 2), kernel_size: int = 16,
                          first_kernel_size: int = 7, last_kernel_size: int = 7,
                          negative_slope: float = 0.3, batch: int = 1,
                          seed: int = 0) -> onnx.ModelProto:
    """A Keras `Conv1DTranspose` vocoder as tf2onnx writes it: mel [N, frames, mel_channels]
    (NWC) -> audio [N, frames*256, 1].

    Architecture: the upsampling path of the keras.io example "MelGAN-based spectrogram
    inversion" (keras-team/keras-io, examples/audio/melgan_spectrogram_inversion.py, after
    Kumar et al., "MelGAN", NeurIPS 2019): Conv1D(512, 7, 'same') -> LeakyReLU ->
    Conv1DTranspose(256, 16, strides 8, 'same') -> LeakyReLU -> (128, 16, 8) -> (64, 16, 2)
    -> (32, 16, 2), each with a LeakyReLU (Keras' default slope 0.3) -> Conv1D(1, 7, 'same',
    activation tanh). Left out: its residual stacks (6 dilated Conv1D each) and its weight
    normalization; every layer has a bias here (the example has use_bias=False).

    The form, from tf2onnx's Conv2DBackpropInput and Conv2D handlers (static width: SAME
    becomes explicit pads) and its transpose optimizer (Keras calls tf.nn.conv1d_transpose,
    which is ExpandDims -> Conv2DBackpropInput -> Squeeze -> BiasAdd; the NHWC<->NCHW
    Transposes are pushed through Squeeze/Add/LeakyRelu/Unsqueeze until they cancel):

        x [N, W, C] -> Unsqueeze(axes=[1]) -> Transpose(perm=[0, 3, 1, 2]) -> [N, C, 1, W]
        -> Conv(W [512, C, 1, 7], kernel_shape [1, 7], strides [1, 1], pads [0, 3, 0, 3])
        -> Squeeze(axes=[2]) -> Add(bias [1, 512, 1]) -> LeakyRelu(alpha 0.3)
        -> per upsample: Unsqueeze(axes=[2]) -> ConvTranspose(W [Cin, Cout, 1, 16], no bias,
           kernel_shape [1, 16], strides [1, s], dilations [1, 1], pads [0, b, 0, e] with
           b = (16 - s)//2, e = 16 - s - b) -> Squeeze(axes=[2]) -> Add(bias [1, Cout, 1])
           -> LeakyRelu
        -> Unsqueeze(axes=[2]) -> Conv(W [1, 32, 1, 7], pads [0, 3, 0, 3]) -> Squeeze(axes=[2])
        -> Add(bias [1, 1, 1]) -> Tanh -> Transpose(perm=[0, 2, 1]) -> y [N, W*256, 1]

    Weights: Keras' glorot_uniform kernels (K, Cout, Cin) put in ONNX's layout; biases
    random and small (Keras starts them at zero).
    """
    _positive(frames=frames, mel_channels=mel_channels, initial_channels=initial_channels,
              kernel_size=kernel_size, first_kernel_size=first_kernel_size,
              last_kernel_size=last_kernel_size, batch=batch)
    _require(len(channels) == len(upsample_rates) > 0, "channels", tuple(channels),
             f"one width per upsample rate ({len(upsample_rates)})")
    _require(kernel_size >= max(upsample_rates), "kernel_size", kernel_size,
             f">= every upsample rate ({max(upsample_rates)}): SAME padding is K - s")
    hyperparameters = dict(
        frames=frames, mel_channels=mel_channels, initial_channels=initial_channels,
        channels=list(channels), upsample_rates=list(upsample_rates), kernel_size=kernel_size,
        first_kernel_size=first_kernel_size, last_kernel_size=last_kernel_size,
        negative_slope=negative_slope, batch=batch, seed=seed)
    g = _GraphBuilder(seed)
    width = frames

    def layer(x: str, scope: str, cin: int, cout: int, kernel: int, stride: int,
              transpose: bool) -> str:
        nonlocal width
        # tf2onnx's explicit pads for a static width: begin = total // 2, the rest at the end.
        if transpose:
            out_width = width * stride
            total = (width - 1) * stride + kernel - out_width
        else:
            out_width = width
            total = max((out_width - 1) * stride + kernel - width, 0)
        pads = (total // 2, total - total // 2)
        # Keras kernels are (K, Cout, Cin) for Conv1DTranspose and (K, Cin, Cout) for
        # Conv1D; ONNX wants [Cin, Cout, 1, K] and [Cout, Cin, 1, K]: both are the
        # reversed axes with the unit height inserted.
        keras_kernel = g.uniform((kernel, cout, cin) if transpose else (kernel, cin, cout),
                                 math.sqrt(6 / (kernel * (cin + cout))))  # glorot_uniform
        weight = g.initializer(f"{scope}/kernel", keras_kernel.transpose(2, 1, 0)[:, :, None, :])
        op_type = "ConvTranspose" if transpose else "Conv"
        x = g.node(op_type, [x, weight], scope, dilations=[1, 1], group=1,
                   kernel_shape=[1, kernel], pads=[0, pads[0], 0, pads[1]],
                   strides=[1, stride])
        x = g.node("Squeeze", [x, g.constant([2])], scope)
        bias = g.uniform((1, cout, 1), 0.05)
        x = g.node("Add", [x, g.initializer(f"{scope}/bias", bias)], scope)
        width = out_width
        return x

    x = g.node("Unsqueeze", ["x", g.constant([1])], "model/conv1d")
    x = g.node("Transpose", [x], "model/conv1d", perm=[0, 3, 1, 2])
    x = layer(x, "model/conv1d", mel_channels, initial_channels, first_kernel_size, 1, False)
    x = g.node("LeakyRelu", [x], "model/leaky_re_lu", alpha=negative_slope)
    cin = initial_channels
    for i, (cout, rate) in enumerate(zip(channels, upsample_rates)):
        scope = f"model/conv1d_transpose_{i}"
        x = g.node("Unsqueeze", [x, g.constant([2])], scope)
        x = layer(x, scope, cin, cout, kernel_size, rate, True)
        x = g.node("LeakyRelu", [x], f"model/leaky_re_lu_{i + 1}", alpha=negative_slope)
        cin = cout
    x = g.node("Unsqueeze", [x, g.constant([2])], "model/conv1d_1")
    x = layer(x, "model/conv1d_1", cin, 1, last_kernel_size, 1, False)
    x = g.node("Tanh", [x], "model/conv1d_1")
    x = g.node("Transpose", [x], "model", perm=[0, 2, 1])
    return g.model([_input("x", (batch, frames, mel_channels))], x, (batch, width, 1),
                   "keras-tf2onnx-vocoder", hyperparameters,
                   keras_tf2onnx_vocoder.__doc__.split("\n")[0])


def keras_melgan_tf2onnx(mel_channels: int = 80, initial_channels: int = 512,
                         channels: Sequence[int] = (256, 128, 64, 32),
                         upsample_rates: Sequence[int] = (8, 8, 2, 2),
                         kernel_size: int = 16, seed: int = 0):
    """(Keras model, tf2onnx's export of it with the time axis None): the layers of
    `keras_tf2onnx_vocoder`, built in Keras and exported by tf2onnx itself, as a Keras
    user with variable-length input does (issue 30). Random weights and biases.

    tf2onnx writes each Conv1DTranspose of an unknown width as a ConvTranspose with no
    pads, then a Slice and a Pad whose pads it computes from Shapes at run time (TVM
    0.27's importer: `Dynamic pads are not supported yet`), each 'same' Conv1D as a
    unit-height 2-D Conv with auto_pad SAME_UPPER. Needs the `reference` extra
    (tensorflow-cpu, tf2onnx)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    keras = tf.keras
    inputs = keras.Input((None, mel_channels))
    x = keras.layers.Conv1D(initial_channels, 7, padding="same")(inputs)
    x = keras.layers.LeakyReLU(0.3)(x)
    for width, rate in zip(channels, upsample_rates):
        x = keras.layers.Conv1DTranspose(width, kernel_size, strides=rate, padding="same")(x)
        x = keras.layers.LeakyReLU(0.3)(x)
    x = keras.layers.Conv1D(1, 7, padding="same", activation="tanh")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(seed)
    # (Scaled by each kernel's fan-in, as glorot keeps activations O(1); biases too.)
    model.set_weights([(rng.standard_normal(w.shape) / np.sqrt(max(w.size // w.shape[-1], 1)))
                       .astype(np.float32) for w in model.get_weights()])
    signature = (tf.TensorSpec((1, None, mel_channels), tf.float32, name="x"),)
    function = tf.function(lambda x: model(x), input_signature=signature)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=17)
    return model, proto


ARCHITECTURES: dict[str, Callable[..., onnx.ModelProto]] = {
    "hifigan-v1": hifigan_v1,
    "encodec-decoder": encodec_decoder,
    "encodec-decoder-lstm": functools.partial(encodec_decoder, lstm=True),
    "encodec-decoder-weight-norm": functools.partial(encodec_decoder, weight_norm=True),
    "demucs-v2-decoder": demucs_v2_decoder,
    "demucs-v2-decoder-lstm": functools.partial(demucs_v2_decoder, lstm=True),
    "keras-tf2onnx-vocoder": keras_tf2onnx_vocoder,
}

# Few channels and frames, every layer and stride kept: each runs on onnxruntime in
# milliseconds and builds in well under a second.
REDUCED_SIZES: dict[str, dict] = {
    "hifigan-v1": dict(frames=8, mel_channels=16, initial_channels=32),
    "encodec-decoder": dict(frames=8, dimension=16, n_filters=4),
    "encodec-decoder-lstm": dict(frames=8, dimension=16, n_filters=4),
    "encodec-decoder-weight-norm": dict(frames=8, dimension=16, n_filters=4),
    "demucs-v2-decoder": dict(frames=8, channels=4),
    "demucs-v2-decoder-lstm": dict(frames=8, channels=4),
    "keras-tf2onnx-vocoder": dict(frames=8, mel_channels=16, initial_channels=32,
                                  channels=(16, 8, 8, 4)),
}


def build(name: str, **sizes) -> onnx.ModelProto:
    """The full-size model `name` of ARCHITECTURES, with any hyperparameters overridden."""
    if name not in ARCHITECTURES:
        raise ArgumentError(f"architecture={name!r} is not known; allowed: "
                            f"{', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](**sizes)


def reduced(name: str, **sizes) -> onnx.ModelProto:
    """The small version of `name` (REDUCED_SIZES), for tests; `sizes` override it."""
    return build(name, **{**REDUCED_SIZES.get(name, {}), **sizes})
