"""The Winograd forms of the polyphase kernel: F(2,2) and F(2,3), fewer multiplies.

Where every phase has two taps, one row apart, with one input shift (d = 1 and K = 2s:
every HiFi-GAN and Demucs upsampler), output rows `q = 2t` and `2t + 1` of a phase are,
with `u = 2t + c` the input row of tap 0 and G0, G1 the taps' [in, out] matrices,

    y[2t]     = x[u] G0   + x[u-1] G1  = m1 + m2
    y[2t + 1] = x[u+1] G0 + x[u] G1    = m2 + m3

    m1 = (x[u-1] - x[u]) G1,   m2 = x[u] (G0 + G1),   m3 = (x[u+1] - x[u]) G0

(Winograd's minimal filtering, Lavin and Gray 2016, arXiv:1509.09308). Three GEMMs over
half the rows replace two over all of them: 3/4 of the multiply-adds, for a transform
of the input (two subtractions per pair and channel) and of the filters (once, at
compile time). With three taps per phase (K = 3s, or the dilated stride-1 layer of
WaveNet-like decoders) F(2,3) does four GEMMs where the direct form does six: 2/3. Taps
e = d/gcd(s, d) rows apart pair row q with q + e. Both forms' coefficients are +-1 on the
data (1/2 on F(2,3)'s filters, exact in binary), and each output is a sum over its own
taps' input rows only, so rounding stays at the direct form's order (checked against the
reference like every kernel). F(3,2) (3 rows from 4 products) was tried and left out:
its outputs mix in rows outside their taps, so a row with no input (output_padding, a
silent stretch) came out at 4e-6 instead of 0, over float32's tolerance, for a gain of
at most a tenth in a trial version.

The transform would break one exact property: an Inf in the input gives Inf - Inf = NaN
in m, where TensorFlow's direct sum has +-Inf, and a huge finite pair may overflow in a
difference. Both show as a non-finite output, and a non-finite direct result is always
non-finite here too, so a last pass ("fix") recomputes, in the direct form, every pair
of rows that came out with a non-finite value: TensorFlow's answer, at the cost of a
scan of the output.

Here: the arithmetic of the form (its transforms, where it applies, its filter slots
and their transform, its pairs of rows), which the layout and the CPU plans need. Its
kernel's TVMScript is source_winograd.py; its CPU schedule, schedule_cpu_winograd.py.
"""
from __future__ import annotations

import functools

import numpy as np

from .polyphase import Geometry, decompose, round_up


# F(2, r) for correlation with r taps, y_h = sum_i d_(h+i) g_i over the r + 1 input rows
# d_i = x[u + i e] of one pair (g_i = G_(r-1-i): tap j reads row q + c - j e):
#     y = A^T [(G g) . (B^T d)]
# as (B^T, G, A^T). F(2,2) is the form above; F(2,3) is Lavin and Gray's (points 0, +-1,
# infinity): 4 products for 6. In both, each output's sum uses only the input rows of its
# own taps (a zero input window gives an exact zero, as in the direct form), every data
# and output coefficient is +-1, and F(2,3)'s filter rows carry a 1/2, exact in binary.
BLOCKS = {
    2: (((1, -1, 0), (0, 1, 0), (0, -1, 1)),
        ((1, 0), (1, 1), (0, 1)),
        ((1, 1, 0), (0, 1, 1))),
    3: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
}
# The most taps a phase may have for the form. Past three taps, F(2, r) is a sum of
# F(2,3) and F(2,2) blocks over consecutive taps (`groups`), not one minimal F(2, r):
# that needs r + 1 interpolation points, and past 0, +-1 and infinity their
# coefficients (+-2, +-1/2, ...) are inexact or grow the rounding error with r; the
# blocks keep every coefficient +-1 (1/2 on filters) and each output a sum over its own
# taps. HiFi-GAN's resblocks (K 7 and 11, dilated) and the stride-1 Conv layers of
# vocoders (K 7) are the shapes this is for: 10 products for 14 (K 7), 15 for 22 (K 11).
MAX_TAPS = 16


def groups(r: int) -> tuple[int, ...]:
    """Taps of each F(2,3) / F(2,2) block of F(2, r), in tap order: as many threes
    (2/3 of the products) as leave a remainder of twos (3/4), never a one-tap block
    (no saving): 4 = 2 + 2, 7 = 3 + 2 + 2, 11 = 3 + 3 + 3 + 2."""
    if r < 2:
        raise ValueError(f"F(2, r) needs r >= 2 taps, got {r}")
    threes, rest = divmod(r, 3)
    if rest == 1:
        return (3,) * (threes - 1) + (2, 2)
    return (3,) * threes + (2,) * (rest // 2)


@functools.lru_cache(maxsize=None)
def transforms(r: int):
    """(B^T, G, A^T) of F(2, r) for `r` taps: the blocks of `groups(r)`, each on its
    own taps and their input rows (a block of b taps from tap o reads d_o .. d_(o+b)),
    its outputs summed. Rows of B^T are products (`products(r)` of them), over r + 1
    input rows; G maps the r taps to each product's filter; A^T the products to 2
    outputs."""
    data, filters, output = [], [], [[], []]
    offset = 0
    for b in groups(r):
        block_data, block_filters, block_output = BLOCKS[b]
        data += [(0,) * offset + row + (0,) * (r - b - offset) for row in block_data]
        filters += [(0,) * offset + row + (0,) * (r - b - offset) for row in block_filters]
        for h in range(2):
            output[h] += block_output[h]
        offset += b
    return tuple(data), tuple(filters), tuple(tuple(row) for row in output)


def products(r: int) -> int:
    """GEMMs per pair of rows in F(2, r) (the direct form does 2r)."""
    return len(transforms(r)[0])


def applies(geometry: Geometry) -> bool:
    """Whether a Winograd form exists for this shape (and this kernel generator has it):
    every phase with the same 2 to MAX_TAPS taps (F(2,2), F(2,3) and sums of them),
    equally spaced rows
    apart (any dilation), one shared input shift, a static batch (either layout), and
    more than one input channel (the transforms cost about what they save on a
    reduction of one channel, whose tile has no channel loop to block). A folded
    kernel (folding.py) is a stride-1 one: its K/s taps are the F(2, r)'s."""
    dec = decompose(geometry)
    return (geometry.batch is not None and geometry.in_channels > 1
            and dec.uniform_shift_step() == 0
            and len({p.taps for p in dec.phases}) == 1 and 2 <= dec.phases[0].taps <= MAX_TAPS
            and dec.rows >= 2)


def _missing_taps(r: int) -> list[int]:
    """Direct taps G_j whose matrix is no product's (a middle tap of each F(2,3) block),
    in the order their slots follow the products'."""
    unit = {row.index(1) for row in transforms(r)[1] if sorted(row) == [0] * (r - 1) + [1]}
    return [j for j in range(r) if r - 1 - j not in unit]


def filter_slots(r: int, summed: bool = False) -> int:
    """Packed filter matrices of F(2, r): the products', then the direct taps that are
    none of them (each F(2,3) block's middle tap), which the fix pass needs exactly.
    F(2,2) with `summed` (KernelLayout.summed_filters): the direct taps G1 and G0 alone."""
    return 2 if summed else products(r) + len(_missing_taps(r))


def transform_filters(packed: np.ndarray, summed: bool = False) -> np.ndarray:
    """Direct packed filters `[blocks, r, in, s, out_tile]` (taps G0 .. G(r-1)) ->
    `[blocks, filter_slots(r, summed), in, s, out_tile]`: (G g) then the missing direct
    taps. F(2,2): (G1, G0 + G1, G0), or (G1, G0) with `summed`; F(2,3): (G2,
    (G0 + G1 + G2)/2, (G0 - G1 + G2)/2, G0, G1). Each is rounded once, from the exact
    sum."""
    r = packed.shape[1]
    g = [packed[:, r - 1 - i].astype(np.float64) for i in range(r)]
    rows = [sum(c * gi for c, gi in zip(coefficients, g) if c)
            for coefficients in transforms(r)[1]]
    rows += [packed[:, j] for j in _missing_taps(r)]
    if summed:
        assert r == 2, r
        rows = [rows[0], rows[2]]
    return np.ascontiguousarray(np.stack(rows, axis=1).astype(packed.dtype))


def direct_tap_slot(r: int, j: int, summed: bool = False) -> int:
    """Slot of direct tap G_j among the packed matrices (for the fix pass): the product
    whose filter is G_j alone, else its place after the products."""
    if summed:
        return r - 1 - j
    unit = [0] * r
    unit[r - 1 - j] = 1
    rows = [list(row) for row in transforms(r)[1]]
    if unit in rows:
        return rows.index(unit)
    return products(r) + _missing_taps(r).index(j)


def padded_rows(dec, tile_pairs: int) -> int:
    """Output rows a kernel of `tile_pairs`-pair tiles covers: pairs (q, q + e) of rows,
    e = row_step, in blocks of 2e rows, the pairs rounded up to whole tiles."""
    e = dec.row_step
    return 2 * e * -(-round_up(pairs_of(dec), tile_pairs) // e)


def pairs_of(dec) -> int:
    """Pairs (q, q + e) that cover a decomposition's rows, e = row_step."""
    return -(-dec.rows // (2 * dec.row_step)) * dec.row_step
