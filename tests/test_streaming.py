"""`op.stream()`: chunk by chunk, the concatenation of what push and flush return is the
offline op's output, for every padding, stride, dilation, layout and chunking; the state
is the overlap, not the history; bad chunks are errors in words."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conv1d_transpose as ct
from conv1d_transpose.graph import make_spec, max_error, shapes


@st.composite
def streamed_calls(draw):
    K, s, d = draw(st.integers(1, 7)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    padding, layout = draw(st.sampled_from(["SAME", "VALID"])), draw(st.sampled_from(["NWC", "NCW"]))
    W = draw(st.integers(1, 14))
    O = draw(st.sampled_from(list(shapes.valid_output_widths(W, K, s, d, padding))))
    N, cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["float32", "float32", "float16"]))
    chunks, left = [], W
    while left:  # random chunk sizes, empty pushes and single frames included
        size = draw(st.integers(0, left))
        chunks.append(size)
        left -= size
    return (N, W, cin, cout, O, K, s, d, padding, layout, dtype, chunks)


def run_stream(op, x, chunks, layout):
    axis = 1 if layout == "NWC" else 2
    stream, parts, at = op.stream(), [], 0
    for size in chunks:
        piece = x[:, at:at + size] if axis == 1 else x[:, :, at:at + size]
        parts.append(stream.push(piece))
        at += size
    parts.append(stream.flush())
    return np.concatenate(parts, axis=axis), stream


def arrays(N, W, cin, cout, K, layout, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, W, cin) if layout == "NWC" else (N, cin, W)).astype(dtype)
    f = rng.standard_normal((K, cout, cin)).astype(dtype)
    return x, f


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(streamed_calls())
def test_any_chunking_gives_the_offline_answer(call):
    N, W, cin, cout, O, K, s, d, padding, layout, dtype, chunks = call
    x, f = arrays(N, W, cin, cout, K, layout, dtype)
    out_shape = [N, O, cout] if layout == "NWC" else [N, cout, O]
    op = ct.Conv1DTranspose(f, out_shape, s, padding, layout, d, backend="onnxruntime")
    streamed, stream = run_stream(op, x, chunks, layout)
    offline = op(x)
    assert streamed.shape == offline.shape and streamed.dtype == offline.dtype
    spec = make_spec(x.shape, f.shape, out_shape, s, padding, layout, d, dtype)
    error, ok = max_error(streamed, x, f, spec)
    assert ok, (error, chunks)
    np.testing.assert_allclose(streamed.astype(np.float64), offline.astype(np.float64),
                               rtol=0, atol=1e-2 if dtype == "float16" else 1e-5)


def test_the_state_is_the_overlap_not_the_history():
    """hifigan-up1's geometry (K 16, s 8) in 10-frame chunks: 8 positions per channel."""
    x, f = arrays(1, 100, 4, 3, 16, "NWC", "float32")
    op = ct.Conv1DTranspose(f, [1, 800, 3], 8, "SAME", backend="onnxruntime")
    stream = op.stream()
    returned = 0
    for at in range(0, 90, 10):
        returned += stream.push(x[:, at:at + 10]).shape[1]
        assert stream.state_positions == (16 - 1) + 1 - 8
        assert returned == (at + 10) * 8 - 4  # final positions, less SAME's crop of 4
    rest = stream.push(x[:, 90:])
    assert returned + rest.shape[1] + stream.flush().shape[1] == 800


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tvm_streams_the_same(dtype, tmp_path):
    x, f = arrays(1, 23, 5, 4, 8, "NCW", dtype)
    op = ct.Conv1DTranspose(f, [1, 4, 92], 4, "SAME", "NCW", backend="tvm", cache_dir=tmp_path)
    streamed, _ = run_stream(op, x, [10, 10, 3], "NCW")
    spec = make_spec(x.shape, f.shape, [1, 4, 92], 4, "SAME", "NCW", 1, dtype)
    assert max_error(streamed, x, f, spec)[1]


def test_bad_chunks_are_errors_in_words():
    x, f = arrays(1, 6, 3, 2, 4, "NWC", "float32")
    op = ct.Conv1DTranspose(f, [1, 12, 2], 2, backend="onnxruntime")
    stream = op.stream()
    with pytest.raises(ct.DtypeError, match="chunk has dtype float64"):
        stream.push(x.astype(np.float64))
    with pytest.raises(ct.ShapeError, match=r"chunk has shape \(1, 2, 4\); this op's stream "
                                            r"takes \(1, 'frames', 3\)"):
        stream.push(np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ct.ShapeError, match="chunk has 7 frames but only 6"):
        stream.push(np.zeros((1, 7, 3), np.float32))
    stream.push(x[:, :4])
    with pytest.raises(ct.ShapeError, match="flush\\(\\) after 4 of the op's 6 input frames"):
        stream.flush()
    stream.push(x[:, 4:])
    stream.flush()
    with pytest.raises(ct.ArgumentError, match="this stream was flushed"):
        stream.push(x[:, :1])


# --- the exported step (op.to_onnx(streaming=True)) -------------------------------------


def run_steps(session, op, x, chunk, layout):
    """Feed the step model chunk by chunk, then crop as the layer does."""
    from conv1d_transpose.graph.streaming_export import state_width

    spec = op.spec
    axis = 1 if layout == "NWC" else 2
    S = state_width(spec)
    state = np.zeros((spec.batch, S, spec.out_channels) if axis == 1 else
                     (spec.batch, spec.out_channels, S), x.dtype)
    outputs = []
    for at in range(0, spec.in_width, chunk):
        piece = x[:, at:at + chunk] if axis == 1 else x[:, :, at:at + chunk]
        out, state = session.run(None, {"input": piece, "state": state})
        outputs.append(out)
    stream = np.concatenate(outputs + [state], axis=axis)
    begin, width = spec.pad_begin, spec.out_width
    if stream.shape[axis] < begin + width:  # positions past the last contribution: zeros
        pad = [(0, 0)] * 3
        pad[axis] = (0, begin + width - stream.shape[axis])
        stream = np.pad(stream, pad)
    return stream[:, begin:begin + width] if axis == 1 else stream[:, :, begin:begin + width]


@pytest.mark.parametrize("layout, K, s, d, padding", [
    ("NWC", 16, 8, 1, "SAME"), ("NCW", 5, 2, 2, "VALID"), ("NWC", 2, 5, 1, "SAME"),
    ("NCW", 3, 3, 1, "SAME")])
def test_the_exported_step_streams_to_the_offline_answer_on_onnxruntime(layout, K, s, d,
                                                                        padding):
    import onnx
    import onnxruntime

    W, chunk = 12, 4
    x, f = arrays(1, W, 3, 2, K, layout, "float32")
    O = max(shapes.valid_output_widths(W, K, s, d, padding))
    op = ct.Conv1DTranspose(f, [1, O, 2] if layout == "NWC" else [1, 2, O], s, padding,
                            layout, d, backend="onnxruntime")
    model = op.to_onnx(streaming=True, chunk_frames=chunk)
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(run_steps(session, op, x, chunk, layout), op(x), rtol=0,
                               atol=1e-5)


def test_our_tvm_path_runs_the_exported_step(tmp_path):
    x, f = arrays(1, 20, 8, 4, 16, "NWC", "float32")
    op = ct.Conv1DTranspose(f, [1, 160, 4], 8, "SAME", backend="onnxruntime")
    session = ct.InferenceSession(op.to_onnx(streaming=True, chunk_frames=5), backend="tvm",
                                  cache_dir=tmp_path)
    np.testing.assert_allclose(run_steps(session, op, x, 5, "NWC"), op(x), rtol=0, atol=1e-5)


def test_the_step_export_checks_its_arguments():
    x, f = arrays(1, 6, 3, 2, 4, "NWC", "float32")
    op = ct.Conv1DTranspose(f, [1, 12, 2], 2, backend="onnxruntime")
    with pytest.raises(ct.ArgumentError, match="chunk_frames=0 must be a positive int"):
        op.to_onnx(streaming=True, chunk_frames=0)
    with pytest.raises(ct.ArgumentError, match="chunk_frames is for streaming=True"):
        op.to_onnx(chunk_frames=4)


def test_streams_of_one_op_share_their_chunk_ops(tmp_path, monkeypatch):
    """A stream per utterance must not open its chunk op again (a TVM artifact load, ~50
    ms, all of it in the time to first audio): the op's streams share them."""
    from conv1d_transpose import op as op_module

    x, f = arrays(1, 12, 8, 4, 16, "NWC", "float32")
    op = ct.Conv1DTranspose(f, [1, 96, 4], 8, "SAME", backend="onnxruntime")
    made = []
    real = op_module.Conv1DTranspose

    class Counting(real):
        def __init__(self, *args, **kwargs):
            made.append(args[1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(op_module, "Conv1DTranspose", Counting)
    for _ in range(3):
        stream = op.stream()
        got = np.concatenate([stream.push(x[:, :6]), stream.push(x[:, 6:]),
                              stream.flush()], axis=1)
        np.testing.assert_allclose(got, op(x), rtol=0, atol=1e-5)
    assert len(made) == 1  # one chunk width (6 frames), one op for all three streams
