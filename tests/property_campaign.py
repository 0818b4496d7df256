"""The property campaign over the whole argument space (run by test_properties.py in a
child process, so a crash or hang fails a test instead of killing the run).

Every call either matches the numpy reference within the dtype's tolerance, or raises a
ValueError whose message names the offending argument. The oracle below decides which,
from TensorFlow's rules (the contract in the README), independently of graph/arguments.py.
"""
import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

import conv1d_transpose as ct
from conv1d_transpose.graph.reference import max_error
from conv1d_transpose.graph.spec import Conv1DTransposeSpec

MAX_ELEMENTS = 2**31 - 1
ARGUMENT_NAMES = ("input", "filters", "output_shape", "strides", "padding", "data_format",
                  "dilations", "dtype")


def dim(high):
    """A size in 1..high, and 0 about once in 4*high+1 draws."""
    return st.integers(0, 4 * high).map(lambda v: 0 if v == 0 else 1 + v % high)


ints = st.integers(-2, 9)
window = st.one_of(
    ints, st.booleans(), st.floats(-1, 4, allow_nan=False), st.none(),
    st.lists(ints, min_size=0, max_size=4), st.tuples(st.just(1), ints, st.just(1)),
    st.tuples(st.just(1), st.just(1), ints), st.lists(ints, min_size=1, max_size=1).map(np.array))
paddings = st.sampled_from(["SAME", "VALID", "same", "Valid", "FULL", "EXPLICIT", "", None, 3])
layouts = st.sampled_from(["NWC", "NCW", "nwc", "NHWC", "NC", None])
dtypes = st.sampled_from(["float32", "float16", "float64", "int32", "bool"])


def as_window(value, layout):
    """TF's strides/dilations: an int, or 1 or 3 ints; with 3, batch and channel entries
    must be 1."""
    if isinstance(value, (bool, np.bool_, float)):
        return None
    if isinstance(value, (int, np.integer)):
        items = [int(value)]
    elif isinstance(value, (list, tuple, np.ndarray)):
        if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in value):
            return None
        items = [int(v) for v in value]
    else:
        return None
    if len(items) == 3:
        spatial = 1 if layout == "NWC" else 2
        if [items[i] for i in range(3) if i != spatial] != [1, 1]:
            return None
        items = [items[spatial]]
    if len(items) != 1 or items[0] < 1:
        return None
    return items[0]


def windows_of_forward_conv(width, K, s, d, padding):
    if padding == "SAME":
        return len(range(0, width, s))
    return len(range(0, width - ((K - 1) * d + 1) + 1, s))


def oracle(x, f, output_shape, strides, padding, layout, dilations):
    """The spec of a valid call, or None for an invalid one (TF's rules)."""
    if not (isinstance(layout, str) and layout.upper() in ("NWC", "NCW")):
        return None
    layout = layout.upper()
    if not (isinstance(padding, str) and padding.upper() in ("SAME", "VALID")):
        return None
    padding = padding.upper()
    s = as_window(strides, layout)
    d = 1 if dilations is None else as_window(dilations, layout)
    if s is None or d is None:
        return None
    if x.dtype != f.dtype or x.dtype.name not in ("float16", "float32", "float64"):
        return None
    if x.ndim != 3 or f.ndim != 3 or len(output_shape) != 3 or min(output_shape) < 0:
        return None
    N, W, C = x.shape if layout == "NWC" else (x.shape[0], x.shape[2], x.shape[1])
    ON, O, OC = output_shape if layout == "NWC" else (output_shape[0], output_shape[2], output_shape[1])
    K, FO, FC = f.shape
    if C != FC or OC != FO or ON != N:
        return None
    if K > 0 and windows_of_forward_conv(O, K, s, d, padding) != W:
        return None
    if max(x.size, f.size, int(np.prod(output_shape, dtype=object))) > MAX_ELEMENTS:
        return None
    dk = (K - 1) * d + 1 if K else 0
    if W == 0 or K == 0:
        begin = end = extra = 0
    else:
        total = max((W - 1) * s + dk - O, 0) if padding == "SAME" else 0
        begin, end = total // 2, total - total // 2
        extra = O - ((W - 1) * s + dk - total)
    return Conv1DTransposeSpec(N, W, C, O, OC, K, s, d, padding, layout, x.dtype.name,
                               begin, end, extra)


@st.composite
def calls(draw):
    """A valid call, then (half the time) one argument replaced by an arbitrary value."""
    nwc = draw(st.booleans())
    layout = draw(st.sampled_from(["NWC", "nwc"] if nwc else ["NCW", "Ncw"]))
    N, W, C, OC, K = draw(dim(2)), draw(dim(6)), draw(dim(3)), draw(dim(3)), draw(dim(6))
    s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["SAME", "VALID", "same"]))
    strides = draw(st.sampled_from([s, [s], (1, s, 1) if nwc else (1, 1, s), np.array([s])]))
    dilations = draw(st.sampled_from([d, [d], None if d == 1 else d]))
    dk = (K - 1) * d + 1 if K else 1
    low = (W - 1) * s + (1 if padding.upper() == "SAME" else dk)
    O = draw(st.integers(max(low, 0), max(low + s - 1, 0)))
    output_shape = draw(st.sampled_from([list, tuple, np.array]))([N, O, OC] if nwc else [N, OC, O])
    dtype = draw(st.sampled_from(["float32", "float32", "float16", "float64"]))
    x_shape = [N, W, C] if nwc else [N, C, W]
    f_dtype = dtype
    mutation = draw(st.sampled_from(["none"] * 6 + ["layout", "padding", "strides", "dilations",
                                     "output_shape", "huge", "dtype", "mixed", "rank"]))
    if mutation == "layout":
        layout = draw(layouts)
    elif mutation == "padding":
        padding = draw(paddings)
    elif mutation == "strides":
        strides = draw(window)
    elif mutation == "dilations":
        dilations = draw(window)
    elif mutation == "output_shape":
        output_shape = draw(st.lists(st.integers(-1, 40), min_size=2, max_size=4))
    elif mutation == "huge":
        output_shape = [N, 2**40, OC] if nwc else [N, OC, 2**40]
    elif mutation == "dtype":
        dtype = f_dtype = draw(dtypes)
    elif mutation == "mixed":
        f_dtype = draw(dtypes)
    elif mutation == "rank":
        x_shape = x_shape[:2]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal(x_shape).astype(dtype)
    f = rng.standard_normal((K, OC, C)).astype(f_dtype)
    if x.size and x.dtype.kind == "f" and draw(st.integers(0, 6)) == 0:
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    form = draw(st.sampled_from(["array", "noncontiguous", "list"]))
    return x, f, output_shape, strides, padding, layout, dilations, form


def present(x, form):
    if form == "noncontiguous" and x.ndim == 3:
        doubled = np.repeat(x, 2, axis=1)
        return doubled[:, ::2, :]  # same values, a strided view
    if form == "list" and x.dtype == np.float32 and x.size:
        return x.tolist()  # Python floats: float32, as in TF (an empty list loses its dims)
    return x


@given(calls())
def test_every_call_matches_the_reference_or_raises_a_named_value_error(call):
    x, f, output_shape, strides, padding, layout, dilations, form = call
    expected = oracle(x, f, output_shape, strides, padding, layout, dilations)
    try:
        y = ct.conv1d_transpose(present(x, form), f, output_shape, strides, padding, layout,
                                dilations, backend="onnxruntime")
    except ValueError as error:
        message = str(error)
        if expected is not None and expected.dtype == "float64" and not expected.is_empty:
            assert isinstance(error, ct.BackendError) and "float64" in message, message
            event("float64 refused by onnxruntime")
            return
        assert expected is None, f"valid call refused: {message}"
        assert any(name in message for name in ARGUMENT_NAMES), message
        event(f"refused: {type(error).__name__}")
        return
    assert expected is not None, "invalid call accepted"
    assert y.shape == expected.output_shape and y.dtype == np.dtype(expected.dtype)
    error, ok = max_error(y, x, f, expected)
    assert ok, error
    event("computed" + (" (empty)" if expected.is_empty else ""))
