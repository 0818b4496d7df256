"""HiFi-GAN's upsampling stack streamed chunk by chunk, exact against the offline run.

Four conv1d_transpose layers (x8, x8, x2, x2: kernels 16, 16, 4, 4, SAME, LeakyReLU
between; NWC, as TensorFlow writes them), each an `op.stream()`: the frames a layer
returns as final are pushed into the next layer at once, so audio leaves the stack as
soon as no later frame can change it. Prints the time to first audio and each chunk's
real-time factor (compute time / audio duration), then checks the streamed audio against
the whole input run at once. With TVM, each new chunk size compiles its kernels once
(the first chunks, and the last): the artifact cache keeps them for the next run.

    python examples/streaming_vocoder.py [--frames 100] [--chunk 10] [--channels 512]
                                         [--backend auto] [--rate 22050]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import conv1d_transpose as ct

UPSAMPLES = ((8, 16), (8, 16), (2, 4), (2, 4))  # (stride, kernel): HiFi-GAN V1


def build(frames, channels, backend, seed=0):
    rng = np.random.default_rng(seed)
    ops, width, cin = [], frames, channels
    for stride, kernel in UPSAMPLES:
        cout = max(cin // 2, 1)
        f = (rng.standard_normal((kernel, cout, cin)) / np.sqrt(cin * kernel)).astype(np.float32)
        width *= stride
        ops.append(ct.Conv1DTranspose(f, [1, width, cout], stride, "SAME", backend=backend))
        cin = cout
    return ops


def leaky(x):
    return np.where(x > 0, x, 0.1 * x).astype(x.dtype)


def offline(ops, x):
    for index, op in enumerate(ops):
        x = op(x)
        x = leaky(x) if index < len(ops) - 1 else x
    return x


def through(streams, piece, last):
    """Push a chunk through every layer's stream (and, for the last chunk, flush each
    layer into the next): the audio that became final."""
    for index, stream in enumerate(streams):
        out = stream.push(piece)
        if last:
            out = np.concatenate([out, stream.flush()], axis=1)
        piece = leaky(out) if index < len(streams) - 1 else out
    return piece


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rate", type=int, default=22050, help="audio samples per second")
    args = parser.parse_args()

    ops = build(args.frames, args.channels, args.backend)
    x = np.random.default_rng(1).standard_normal((1, args.frames, args.channels)).astype(np.float32)
    print(f"{len(ops)} layers on {ops[0].backend}, {args.frames} frames in chunks of "
          f"{args.chunk}, {args.frames * 256} samples at {args.rate} Hz")
    streams = [op.stream() for op in ops]
    audio, start = [], time.perf_counter()
    first = None
    for at in range(0, args.frames, args.chunk):
        began = time.perf_counter()
        piece = through(streams, x[:, at:at + args.chunk], last=at + args.chunk >= args.frames)
        spent = time.perf_counter() - began
        if first is None and piece.shape[1]:
            first = time.perf_counter() - start
        audio.append(piece)
        seconds = piece.shape[1] / args.rate
        rtf = f"{spent / seconds:.3f}" if seconds else "-"
        print(f"  chunk at frame {at:4d}: {piece.shape[1]:6d} samples, {spent * 1e3:7.2f} ms, "
              f"real-time factor {rtf}")
    streamed = np.concatenate(audio, axis=1)
    expected = offline(ops, x)
    error = float(np.max(np.abs(streamed - expected))) if streamed.shape == expected.shape \
        else float("inf")
    ok = error <= 1e-4 * max(float(np.max(np.abs(expected))), 1.0)
    print(f"time to first audio {first * 1e3:.1f} ms; streamed {streamed.shape} against "
          f"offline {expected.shape}: max difference {error:.1e}: {'OK' if ok else 'MISMATCH'}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
