"""graph/shapes.py against tf.nn.conv1d_transpose's definitions (valid widths from the
forward conv1d), exhaustively."""
import itertools

import pytest

from conv1d_transpose.graph import shapes


def forward_width_by_counting(width, K, s, d, padding):
    """Windows the forward conv1d places on a `width`-wide signal, counted one by one."""
    if padding == "SAME":
        return len(range(0, width, s))
    dk = (K - 1) * d + 1
    return len(range(0, width - dk + 1, s))


GRID = list(itertools.product(range(0, 7), range(1, 7), range(1, 6), range(1, 4), shapes.PADDINGS))


@pytest.mark.parametrize("padding", shapes.PADDINGS)
def test_valid_output_widths_are_exactly_the_widths_that_map_back(padding):
    for W, K, s, d, pad in GRID:
        if pad != padding:
            continue
        expected = [O for O in range(0, 80) if forward_width_by_counting(O, K, s, d, pad) == W]
        assert list(shapes.valid_output_widths(W, K, s, d, pad)) == expected, (W, K, s, d, pad)


def test_input_width_for_output_inverts_valid_output_widths():
    for W, K, s, d, pad in GRID:
        for O in shapes.valid_output_widths(W, K, s, d, pad):
            assert shapes.input_width_for_output(O, K, s, d, pad) == W


def test_transpose_padding_reproduces_the_output_width():
    for W, K, s, d, pad in GRID:
        if W == 0:
            continue
        dk = (K - 1) * d + 1
        for O in shapes.valid_output_widths(W, K, s, d, pad):
            begin, end, extra = shapes.transpose_padding(W, O, K, s, d, pad)
            assert min(begin, end, extra) >= 0
            assert extra < s, "ONNX output_padding must stay below the stride"
            assert (W - 1) * s + dk - begin - end + extra == O
            if pad == "SAME":
                total = max((W - 1) * s + dk - O, 0)
                assert (begin, end) == (total // 2, total - total // 2)
            else:
                assert (begin, end) == (0, 0)


def test_empty_input_or_kernel_has_no_padding():
    assert shapes.transpose_padding(0, 0, 3, 2, 1, "SAME") == (0, 0, 0)
    assert shapes.transpose_padding(4, 8, 0, 2, 1, "SAME") == (0, 0, 0)


def test_dilated_kernel_width():
    assert shapes.dilated_kernel_width(3, 4) == 9
    assert shapes.dilated_kernel_width(1, 7) == 1
    assert shapes.dilated_kernel_width(0, 2) == 0
