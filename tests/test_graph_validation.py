"""The error contract: every row of the README's table raises a ValueError naming the argument."""
import numpy as np
import pytest

import conv1d_transpose as ct

X = np.ones((2, 4, 3), np.float32)      # NWC, W=4, Cin=3
F = np.ones((3, 5, 3), np.float32)      # K=3, Cout=5, Cin=3
GOOD = dict(output_shape=[2, 8, 5], strides=2, padding="SAME")


def call(**changes):
    arguments = dict(input=X, filters=F, **GOOD)
    arguments.update(changes)
    return ct.conv1d_transpose(**arguments)


BAD_CALLS = [
    # (what, arguments, error class, words the message must contain)
    ("2-element output_shape (TF aborts the process)", dict(output_shape=[2, 8]), ct.ShapeError, ["output_shape", "[2, 8]", "3 integers"]),
    ("4-element output_shape", dict(output_shape=[2, 8, 5, 1]), ct.ShapeError, ["output_shape", "3 integers"]),
    ("scalar output_shape", dict(output_shape=8), ct.ShapeError, ["output_shape", "3 integers"]),
    ("float output_shape", dict(output_shape=[2, 8.0, 5]), ct.ArgumentError, ["output_shape", "integers"]),
    ("negative output width", dict(output_shape=[2, -8, 5]), ct.ShapeError, ["output_shape", "negative"]),
    ("output width not valid for W (SAME)", dict(output_shape=[2, 9, 5]), ct.ShapeError, ["width 9", "input width 4", "allowed widths: 7..8"]),
    ("output width not valid for W (VALID)", dict(output_shape=[2, 8, 5], padding="VALID"), ct.ShapeError, ["width 8", "allowed widths: 9..10"]),
    ("wrong batch in output_shape", dict(output_shape=[3, 8, 5]), ct.ShapeError, ["batch 3", "batch 2"]),
    ("wrong channels in output_shape", dict(output_shape=[2, 8, 4]), ct.ShapeError, ["4 channels", "produce 5"]),
    ("filters in_channels != input channels", dict(filters=np.ones((3, 5, 2), np.float32)), ct.ShapeError, ["3 channels", "expect 2"]),
    ("padding 'FULL'", dict(padding="FULL"), ct.ArgumentError, ["padding='FULL'", "'SAME' or 'VALID'"]),
    ("padding 'EXPLICIT'", dict(padding="EXPLICIT"), ct.ArgumentError, ["padding='EXPLICIT'", "'SAME' or 'VALID'"]),
    ("padding None", dict(padding=None), ct.ArgumentError, ["padding=None"]),
    ("data_format 'NHWC'", dict(data_format="NHWC"), ct.ArgumentError, ["data_format='NHWC'", "'NWC' or 'NCW'"]),
    ("strides of length 2", dict(strides=[1, 2]), ct.ArgumentError, ["strides=[1, 2]", "2 entries", "1 or 3"]),
    ("batch stride 2 (TF silently accepts)", dict(strides=[2, 2, 1]), ct.ArgumentError, ["strides=[2, 2, 1]", "batch and channel entries must be 1"]),
    ("channel stride 2", dict(strides=[1, 2, 2]), ct.ArgumentError, ["batch and channel entries must be 1"]),
    ("stride 0", dict(strides=0), ct.ArgumentError, ["strides=0", ">= 1"]),
    ("negative stride", dict(strides=[-2]), ct.ArgumentError, ["strides=[-2]", ">= 1"]),
    ("float stride", dict(strides=2.0), ct.ArgumentError, ["strides=2.0", "integers"]),
    ("bool stride", dict(strides=True), ct.ArgumentError, ["strides=True", "integers"]),
    ("dilation 0", dict(dilations=0), ct.ArgumentError, ["dilations=0", ">= 1"]),
    ("dilations of length 2", dict(dilations=[1, 1]), ct.ArgumentError, ["dilations=[1, 1]", "1 or 3"]),
    ("rank-2 input", dict(input=np.ones((4, 3), np.float32)), ct.ShapeError, ["input", "(4, 3)", "rank 3"]),
    ("rank-4 filters", dict(filters=np.ones((3, 5, 3, 1), np.float32)), ct.ShapeError, ["filters", "rank 3"]),
    ("int32 input", dict(input=X.astype(np.int32), filters=F.astype(np.int32)), ct.DtypeError, ["int32", "float16, float32, float64"]),
    ("bool input", dict(input=X.astype(bool), filters=F.astype(bool)), ct.DtypeError, ["bool"]),
    ("complex input", dict(input=X.astype(np.complex64), filters=F.astype(np.complex64)), ct.DtypeError, ["complex64"]),
    ("mixed dtypes", dict(filters=F.astype(np.float64)), ct.DtypeError, ["float32", "float64", "must be equal"]),
    ("string input", dict(input="abc"), ct.DtypeError, ["input", "not numeric"]),
    ("ragged input", dict(input=[[1.0], [1.0, 2.0]]), ct.ArgumentError, ["input", "not an array"]),
    ("backend unknown", dict(backend="cudnn"), ct.ArgumentError, ["backend='cudnn'", "'onnxruntime'"]),
    ("target empty", dict(target=""), ct.ArgumentError, ["target=''"]),
]


@pytest.mark.parametrize("what, changes, error, words", BAD_CALLS, ids=[row[0] for row in BAD_CALLS])
def test_bad_argument_raises_a_value_error_naming_it(what, changes, error, words):
    with pytest.raises(error) as raised:
        call(**changes)
    assert isinstance(raised.value, ValueError)
    for word in words:
        assert word in str(raised.value), f"{word!r} not in message: {raised.value}"


def test_too_many_elements_is_refused_before_allocating():
    # 2**31 output elements: refused by size, with the shape in the message.
    x = np.ones((1, 2**20, 1), np.float32)
    f = np.ones((1, 2**11, 1), np.float32)
    with pytest.raises(ct.ShapeError, match="at most 2147483647"):
        ct.conv1d_transpose(x, f, [1, 2**20, 2**11], 1)


def test_op_object_checks_each_call():
    op = ct.Conv1DTranspose(F, [2, 8, 5], 2)
    with pytest.raises(ct.ShapeError, match=r"\(2, 4, 3\)"):
        op(np.ones((2, 5, 3), np.float32))
    with pytest.raises(ct.DtypeError, match="float64"):
        op(np.ones((2, 4, 3), np.float64))


@pytest.mark.parametrize("strides, dilations, layout", [
    (2, None, "NWC"), ([2], [1], "NWC"), ((1, 2, 1), (1, 1, 1), "NWC"),
    (np.array([1, 2, 1]), np.int64(1), "NWC"), ([1, 1, 2], [1, 1, 1], "NCW"),
])
def test_every_accepted_form_of_strides_and_dilations(strides, dilations, layout):
    x = X if layout == "NWC" else X.transpose(0, 2, 1)
    out = [2, 8, 5] if layout == "NWC" else [2, 5, 8]
    y = ct.conv1d_transpose(x, F, np.array(out), strides, "SAME", layout, dilations)
    assert y.shape == tuple(out)


def test_lower_case_padding_and_data_format_are_accepted():
    a = ct.conv1d_transpose(X, F, [2, 8, 5], 2, "same", "nwc")
    b = ct.conv1d_transpose(X, F, [2, 8, 5], 2, "SAME", "NWC")
    np.testing.assert_array_equal(a, b)


def test_python_lists_become_float32_as_in_tensorflow():
    y = ct.conv1d_transpose(X.tolist(), F.tolist(), (2, 8, 5), 2)
    assert y.dtype == np.float32


@pytest.mark.parametrize("padding, width", [("SAME", 0), ("VALID", 0), ("VALID", 2)])
def test_empty_input_width_gives_zeros(padding, width):
    y = ct.conv1d_transpose(np.ones((2, 0, 3), np.float32), F, [2, width, 5], 2, padding)
    assert y.shape == (2, width, 5) and not y.any()


def test_empty_input_width_still_checks_the_output_width():
    # The forward conv1d of 5 positions gives 3, not 0 (TF float16/float64 refuse it too).
    with pytest.raises(ct.ShapeError, match="allowed widths: 0..0"):
        ct.conv1d_transpose(np.ones((2, 0, 3), np.float32), F, [2, 5, 5], 2)


@pytest.mark.parametrize("width", [0, 3, 100])
def test_empty_kernel_gives_zeros_of_any_output_width(width):
    y = ct.conv1d_transpose(X, np.ones((0, 5, 3), np.float32), [2, width, 5], 2)
    assert y.shape == (2, width, 5) and not y.any()


def test_batch_zero_still_checks_the_output_width():
    x = np.ones((0, 4, 3), np.float32)
    assert ct.conv1d_transpose(x, F, [0, 8, 5], 2).shape == (0, 8, 5)
    with pytest.raises(ct.ShapeError, match="allowed widths: 7..8"):
        ct.conv1d_transpose(x, F, [0, 20, 5], 2)


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_propagate(special):
    x = X.copy()
    x[0, 1, 0] = special
    y = ct.conv1d_transpose(x, F, [2, 8, 5], 2)
    hit = y[0, 1:5]  # output positions w*s + k - pad_begin for w=1, k=0..2
    assert np.isnan(hit).any() or np.isinf(hit).any()
    assert np.isfinite(y[1]).all()
