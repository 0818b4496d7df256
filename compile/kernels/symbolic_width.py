"""One kernel for every input width (issue 30): the direct form with the width a
variable of the PrimFunc.

A model exported with a free time axis reaches the lowering with a symbolic input width
`W` and an output width `O = s*W + c` (ONNX ConvTranspose: `c = (K-1)*d + 1 - s - pads
+ output_padding`). Every size the direct form's source is built from is then affine in
`W`, exactly: the kernel's output rows per phase (`(pad_begin + O - 1) // s - q_first +
1 = W + const`, the floor is exact because `s*W` divides by `s`), a folded kernel's rows
(folding.py: `ceil((offset + O) / s)`), and the padded input window (the padded rows plus
a constant). Everything else (phases, taps, the register tile, the packed filters) does
not depend on `W` at all.

So the kernel is planned and laid out at a reference width, and its source writes each
width-dependent size as an expression of the variable `width` (`SymbolicWidth`): the row
loop is the tile-rounded `ceil(rows / R) * R`, which the schedule splits into whole tiles
with no remainder guard; the stores keep their guard against `O`. The schedule is the
static kernel's, unchanged. `fit` finds the affine forms by evaluating the static
geometry at three widths, and refuses (None) a layer where any other size changes with
the width.

The Winograd form writes its pairs with `padded_pairs`. The width form
(source_width.py) takes a `SymbolicWidth` too, with sizes of its own
(`source_width.symbolic_sizes`) and a second loop nest for outputs narrower than one
tile. Nothing here imports TVM.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from .folding import kernel_geometry
from .polyphase import Geometry, decompose

# The width a symbolic-width kernel is planned at (its loop order, register tile and
# reduction blocks): a second of 22 kHz audio at HiFi-GAN's first layer is 86 frames, a
# sentence a few hundred.
REFERENCE_WIDTH = 256
# The name of the width variable in the kernel's source.
VARIABLE = "width"


@dataclasses.dataclass(frozen=True)
class Affine:
    """`scale * width + offset`."""

    scale: int
    offset: int

    def at(self, width: int) -> int:
        return self.scale * width + self.offset

    def text(self, variable: str = VARIABLE) -> str:
        if not self.scale:
            return str(self.offset)
        term = variable if self.scale == 1 else f"{variable} * {self.scale}"
        if not self.offset:
            return f"({term})"
        return f"({term} {'+' if self.offset > 0 else '-'} {abs(self.offset)})"


@dataclasses.dataclass(frozen=True)
class SymbolicWidth:
    """The width-dependent sizes of a kernel, as affine functions of its input width.

    out_width: the kernel's output rows (the layer's width, or a folded kernel's rows);
    rows: the q rows per phase (`Decomposition.rows`); layer_width: the layer's output
    width (what a folded kernel's store guards against).
    """

    out_width: Affine
    rows: Affine
    layer_width: Affine
    # Register tiles per chunk of rows (a plan's chunk_tiles): the rows are rounded up to
    # whole chunks, so that no split of the row loop leaves a remainder guard.
    tiles_per_chunk: int = 1

    def padded_rows(self, tile_rows: int) -> str:
        """The row loop's extent: rows rounded up to whole chunks of register tiles
        (layout.plan_layout rounds to whole tiles)."""
        unit = tile_rows * self.tiles_per_chunk
        return f"(({self.rows.text()} + {unit - 1}) // {unit} * {unit})"

    def padded_pairs(self, row_step: int, tile_pairs: int) -> str:
        """The Winograd form's pairs, rounded up to whole tiles (source_winograd.pairs):
        `ceil(rows / 2e) * e` pairs of rows (q, q + e), e = row_step."""
        pairs = f"(({self.rows.text()} + {2 * row_step - 1}) // {2 * row_step} * {row_step})"
        return f"(({pairs} + {tile_pairs - 1}) // {tile_pairs} * {tile_pairs})"

    def padded_pair_rows(self, row_step: int, tile_pairs: int) -> str:
        """The rows the Winograd form's pairs cover (winograd.padded_rows)."""
        pairs = self.padded_pairs(row_step, tile_pairs)
        return f"(({pairs} + {row_step - 1}) // {row_step} * {2 * row_step})"


def layer_at(geometry: Geometry, out_offset: int) -> Callable[[int], Geometry]:
    """The layer at input width W: `geometry` with `in_width = W`, `out_width = s*W +
    out_offset`."""
    def at(width: int) -> Geometry:
        return dataclasses.replace(geometry, in_width=width,
                                   out_width=geometry.stride * width + out_offset)
    return at


def _width_free(geometry: Geometry) -> Geometry:
    """The geometry with its width-dependent fields blanked, to compare across widths."""
    return dataclasses.replace(geometry, in_width=0, out_width=0, folded_width=0)


def fit(layer: Callable[[int], Geometry]) -> SymbolicWidth | None:
    """The affine forms of a layer's kernel sizes (see the module docstring), or None
    when a size is not affine in the width or anything else changes with it."""
    widths = (REFERENCE_WIDTH, REFERENCE_WIDTH + 1, REFERENCE_WIDTH + 13)
    kernels = [kernel_geometry(layer(w)) for w in widths]
    if any(_width_free(k) != _width_free(kernels[0]) for k in kernels):
        return None
    if any(k.in_width != w for k, w in zip(kernels, widths)):
        return None

    def affine(values):
        scale = values[1] - values[0]
        offset = values[0] - scale * widths[0]
        if values[2] != scale * widths[2] + offset:
            return None
        return Affine(scale, offset)

    out_width = affine([k.out_width for k in kernels])
    rows = affine([decompose(k).rows for k in kernels])
    layer_width = affine([(k.folded_width if k.folded_stride > 1 else k.out_width)
                          for k in kernels])
    if None in (out_width, rows, layer_width):
        return None
    if any(decompose(k).q_first != decompose(kernels[0]).q_first for k in kernels):
        return None
    return SymbolicWidth(out_width, rows, layer_width)


def smallest_width(width: SymbolicWidth) -> int:
    """The narrowest input the affine forms hold for: the kernel's output and the layer's
    at least one position wide (narrower inputs have an empty output, which the op
    answers without a kernel)."""
    w = 1
    while width.out_width.at(w) < 1 or width.layer_width.at(w) < 1 or width.rows.at(w) < 1:
        w += 1
    return w
