"""`op.stream()`: a conv1d_transpose fed chunk by chunk, exact against the offline op.

Input frame `w` reaches output positions `w*s + k*d` (k < K) of the uncropped transposed
convolution, the layer's output being those positions shifted by `pad_begin` and cut to
`output_shape`. After `n` frames, every uncropped position below `n*s` is final: no later
frame reaches it. So each `push` runs the op's backend on the new frames alone (a VALID
op whose output is their whole, uncropped contribution), adds it onto the positions still
open, and returns the ones that became final; the state it keeps between pushes is the
`(K-1)*d + 1 - s` positions per channel that the next frames still add to (none where
the dilated kernel is no wider than the stride). `flush` returns the rest, cropped as
`output_shape` asks, zeros included.

Why: every streaming vocoder hand-builds this (Piper pads chunks and trims,
rhasspy/piper#255; mlx-audio crossfades, Blaizzy/mlx-audio#618), and a crossfade is not
the offline answer. Here the concatenation of what `push` and `flush` return is `op(x)`,
within the dtype's tolerance (partial sums are added in the op's dtype), for every
padding, stride, dilation and chunking.
"""
from __future__ import annotations

import collections
import threading

import numpy as np

from .graph.arguments import as_array
from .graph.errors import ArgumentError, DtypeError, ShapeError

# Chunk widths whose ops (one build each) a stream keeps: a streaming client mostly sends
# one or two sizes (a steady chunk and a short last one).
CHUNK_OPS = 8


class ChunkOps:
    """The VALID ops of the last CHUNK_OPS chunk widths, least recently used evicted. One
    per `Conv1DTranspose`, shared by its streams: a stream per utterance would otherwise
    open (load, or build) its chunk op again on its first push, ~50 ms with TVM for
    hifigan-up1's layer in 10-frame chunks (`bench --stream`, 2026-12-06), all of it in
    the time to first audio."""

    def __init__(self):
        self._ops: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, frames: int, make):
        with self._lock:
            op = self._ops.pop(frames, None)
            if op is None:
                op = make()
                if len(self._ops) >= CHUNK_OPS:
                    self._ops.popitem(last=False)
            self._ops[frames] = op
            return op


class Stream:
    """The state of one stream through an op: see the module docstring.

    Made by `Conv1DTranspose.stream()`; `push(chunk)` takes `[batch, frames, in_channels]`
    (NWC) or `[batch, in_channels, frames]` (NCW), any number of frames including none,
    and returns the output positions that became final in the same layout; `flush()`
    returns the rest once the op's whole input width has been pushed.
    """

    def __init__(self, spec, valid_op, ops=None):
        # ops: the chunk ops' cache, shared by every stream of one op (see `_chunk_op`).
        # valid_op(output_shape): a VALID op with the stream's filters, stride, dilation,
        # layout and backend (Conv1DTranspose.stream makes it).
        self._spec, self._valid_op = spec, valid_op
        self._ncw = spec.data_format == "NCW"
        self._dtype = np.dtype(spec.dtype)
        self._frames = 0  # input frames pushed
        self._emitted = 0  # output positions returned
        self._base = 0  # uncropped position of the first one `_open` holds
        # Positions still open, [batch, positions, out_channels] whatever the layout.
        self._open = np.zeros((spec.batch, 0, spec.out_channels), self._dtype)
        self._ops = ChunkOps() if ops is None else ops
        self._done = False

    @property
    def frames(self) -> int:
        """Input frames pushed so far."""
        return self._frames

    @property
    def state_positions(self) -> int:
        """Output positions per channel carried to the next push (the stream's state)."""
        return self._open.shape[1]

    def push(self, chunk) -> np.ndarray:
        """The output positions no later frame can change, after `chunk`'s frames."""
        if self._done:
            raise ArgumentError("this stream was flushed; op.stream() starts a new one")
        chunk = self._check(chunk)
        spec = self._spec
        frames = chunk.shape[2] if self._ncw else chunk.shape[1]
        if frames and not spec.is_empty:
            full = self._chunk_op(frames)(chunk)
            if self._ncw:
                full = full.transpose(0, 2, 1)
            self._add(self._frames * spec.stride, full)
        self._frames += frames
        final = self._frames * spec.stride if self._frames < spec.in_width else None
        return self._emit(final)

    def flush(self) -> np.ndarray:
        """The rest of the output, once every frame of the op's input width was pushed."""
        if self._done:
            raise ArgumentError("this stream was flushed; op.stream() starts a new one")
        if self._frames != self._spec.in_width:
            raise ShapeError(f"flush() after {self._frames} of the op's {self._spec.in_width} "
                             f"input frames: push the other {self._spec.in_width - self._frames} "
                             f"first (the op's input shape is {self._spec.input_shape})")
        self._done = True
        return self._emit(None)

    # --- internals -------------------------------------------------------------------

    def _check(self, chunk) -> np.ndarray:
        if not isinstance(chunk, np.ndarray):
            chunk = as_array(chunk, "chunk")
        spec = self._spec
        if chunk.dtype != self._dtype:
            raise DtypeError(f"chunk has dtype {chunk.dtype}; this op's filters are "
                             f"{self._dtype}, and the dtypes must be equal")
        width_axis = 2 if self._ncw else 1
        expected = list(spec.input_shape)
        expected[width_axis] = "frames"
        if chunk.ndim != 3 or any(chunk.shape[i] != expected[i] for i in range(3)
                                  if i != width_axis):
            raise ShapeError(f"chunk has shape {chunk.shape}; this op's stream takes "
                             f"{tuple(expected)} ({spec.data_format}), frames >= 0")
        left = spec.in_width - self._frames
        if chunk.shape[width_axis] > left:
            raise ShapeError(f"chunk has {chunk.shape[width_axis]} frames but only {left} of "
                             f"the op's {spec.in_width} input frames are left")
        return chunk

    def _chunk_op(self, frames: int):
        """A VALID op on `frames` frames: their whole, uncropped contribution."""
        spec = self._spec
        width = (frames - 1) * spec.stride + spec.dilated_kernel_width
        return self._ops.get(frames, lambda: self._valid_op(
            [spec.batch, spec.out_channels, width] if self._ncw else
            [spec.batch, width, spec.out_channels]))

    def _add(self, start: int, full: np.ndarray) -> None:
        """Add a chunk's uncropped output, which begins at uncropped position `start`."""
        end = start + full.shape[1]
        held_end = self._base + self._open.shape[1]
        if end > held_end:
            grow = np.zeros((self._open.shape[0], end - held_end, self._open.shape[2]),
                            self._dtype)
            self._open = np.concatenate([self._open, grow], axis=1)
        offset = start - self._base
        self._open[:, offset:offset + full.shape[1]] += full

    def _emit(self, final: int | None) -> np.ndarray:
        """Return the output positions whose uncropped position is below `final` (None:
        all of them), not returned yet, and forget what no later push adds to."""
        spec = self._spec
        stop = spec.out_width if final is None else \
            max(self._emitted, min(spec.out_width, final - spec.pad_begin))
        out = np.zeros((spec.batch, stop - self._emitted, spec.out_channels), self._dtype)
        # Uncropped positions [begin, end) of what is returned, and what `_open` has of it.
        begin, end = self._emitted + spec.pad_begin, stop + spec.pad_begin
        lo, hi = max(begin, self._base), min(end, self._base + self._open.shape[1])
        if hi > lo:
            out[:, lo - begin:hi - begin] = self._open[:, lo - self._base:hi - self._base]
        self._emitted = stop
        # Below both the last returned position and the final ones, nothing is needed.
        drop = end if final is None else min(final, end)
        drop = max(drop, self._base)
        keep = self._open[:, drop - self._base:]
        self._open = np.ascontiguousarray(keep)
        self._base = drop
        return out.transpose(0, 2, 1).copy() if self._ncw else out
