"""How a kernel lays out its work and its filters: the tiles a schedule pads the
iteration space to (`Tiling`), the sizes and block names of the kernel built for them
(`KernelLayout`, `plan_layout`), and the filters packed for it (`pack_filters`), once, at
compile time, in either form (the Winograd form's filter transform is winograd.py's).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .polyphase import Decomposition, Geometry, decompose, round_up


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Padding of the iteration space to whole tiles, chosen by the schedule.

    rows: q rows per register tile; out_tile: output channels per vector tile (the packed
    filter's innermost axis); in_tile: input channels per reduction step. The extra rows
    and channels are computed on zeros and never stored.
    """

    rows: int = 1
    out_tile: int = 1
    in_tile: int = 1


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Sizes of the generated kernel and the names of its blocks, for the schedules."""

    geometry: Geometry
    decomposition: Decomposition
    tiling: Tiling
    padded_rows: int  # rows rounded up to tiling.rows
    in_channels: int  # rounded up to tiling.in_tile
    out_blocks: int  # ceil(out_channels / out_tile)
    input_first_row: int  # input row of padded row 0 (<= 0 when padding is needed)
    padded_width: int
    groups: tuple[tuple[str, str, tuple[int, ...]], ...]  # (accumulate, store, phases)
    zero_blocks: tuple[str, ...]
    # Packed filters: [out_blocks, max_taps, in_channels, s, out_tile], or with
    # phase_major [out_blocks, s, max_taps, in_channels, out_tile].
    filters_shape: tuple[int, ...]
    merged: bool  # one block computes all phases (phase index r is a block variable)
    # The Winograd F(2,r) form (winograd.py, source_winograd.py): rows in pairs, filters
    # [.., winograd.filter_slots(r), in, s, out_tile].
    winograd: bool = False
    # Each (channel block, phase) panel of filters contiguous, for a register tile of one
    # phase. Interleaved by phase, such a panel reads 256 bytes of every 1 KB (s = 4,
    # 64 channels), so it only reaches a quarter of the cache's sets: L2 holds a quarter
    # of it. Kernel ms, interleaved -> by phase, in one process (Emerald Rapids,
    # 2026-11-26, tools/cpu/kernel_plans.py): hifigan-up2 6.08 -> 4.82, ncw-up2 6.97 ->
    # 5.43, demucs-dec1 8.11 -> 7.50 (its F(2,2) form, 1.5 MB panels: 22.5 -> 9.4 in
    # separate runs). A tile spanning every phase reads all s phases of one channel at
    # once: interleaved suits it.
    phase_major: bool = False
    # F(2,2) with only the direct taps G1 and G0 packed: the middle product's filters,
    # G0 + G1, are summed by the kernel, a reduction block at a time
    # (source_winograd.py), so a plan that streams its filters from beyond L2 reads 2/3
    # of the bytes. Set for blocked plans only (schedule_cpu.build,
    # schedule_cpu_winograd.blocks_reduction).
    summed_filters: bool = False

    def filter_at(self, block: str, phase: str, slot: str, channel: str, lane: str) -> str:
        """TVMScript index of one packed filter value."""
        if self.phase_major:
            return f"filters[{block}, {phase}, {slot}, {channel}, {lane}]"
        return f"filters[{block}, {slot}, {channel}, {phase}, {lane}]"

    @property
    def pad_block(self) -> str:
        return "pad"


def plan_layout(geometry: Geometry, tiling: Tiling, winograd: bool = False,
                phase_major: bool = False, summed_filters: bool = False) -> KernelLayout:
    """The kernel's sizes for a tiling: padded rows/channels, the padded input window, and
    its blocks: one accumulate/store pair for all phases when they share tap count and an
    affine input shift (d = 1 with K a multiple of s, or s = 1), else one pair per active
    phase, plus a zero-filling block per phase that no tap reaches.

    winograd: the F(2,r) form (winograd.py), where `tiling.rows` counts pairs of rows.
    phase_major: the filters' panel of each phase contiguous (KernelLayout.phase_major).
    summed_filters: F(2,2)'s middle product's filters summed by the kernel
    (KernelLayout); no effect on any other form.
    """
    dec = decompose(geometry)
    s, e = dec.stride, dec.row_step
    if winograd:
        from .winograd import padded_rows as _winograd_rows
        padded_rows = _winograd_rows(dec, tiling.rows)
    else:
        padded_rows = round_up(dec.rows, tiling.rows)
    cin = round_up(geometry.in_channels, tiling.in_tile)
    out_blocks = -(-geometry.out_channels // tiling.out_tile)
    active = dec.active
    if active:
        first = dec.q_first - max(p.shift + (p.taps - 1) * e for p in active)
        last = padded_rows - 1 + dec.q_first - min(p.shift for p in active)
    else:
        first, last = 0, -1
    beta = dec.uniform_shift_step()
    if beta is not None:
        groups = (("accumulate", "store", tuple(range(s))),)
    else:
        groups = tuple((f"accumulate_r{p.r}", f"store_r{p.r}", (p.r,)) for p in active)
    zero = tuple(f"zero_r{p.r}" for p in dec.phases if p.taps == 0)
    if winograd:
        from .winograd import filter_slots
        summed_filters = summed_filters and dec.max_taps == 2
        taps = filter_slots(dec.max_taps, summed_filters)
    else:
        summed_filters = False
        taps = dec.max_taps
    return KernelLayout(geometry, dec, tiling, padded_rows, cin, out_blocks, first,
                        last - first + 1, groups, zero,
                        (out_blocks, s, taps, cin, tiling.out_tile) if phase_major
                        else (out_blocks, taps, cin, s, tiling.out_tile),
                        beta is not None, winograd, phase_major, summed_filters)


def pack_filters(filters: np.ndarray, layout: KernelLayout) -> np.ndarray:
    """TF-layout `[K, out, in]` filters -> `[out_blocks, taps, in, phase, out_tile]`
    (`[out_blocks, phase, taps, in, out_tile]` with layout.phase_major).

    Done once at compile time (filters are constants of the model). Slots of missing
    taps and of padding channels are zero and, for taps, never read.
    """
    geometry, dec = layout.geometry, layout.decomposition
    f = np.asarray(filters)
    K, cout, cin = f.shape
    packed = np.zeros((layout.out_blocks * layout.tiling.out_tile, dec.max_taps,
                       layout.in_channels, dec.stride), dtype=geometry.accumulate_dtype)
    for p in dec.active:
        for j in range(p.taps):
            k = p.first_tap + j * dec.tap_step
            packed[:cout, j, :cin, p.r] = f[k].astype(geometry.accumulate_dtype)
    packed = packed.reshape(layout.out_blocks, layout.tiling.out_tile, dec.max_taps,
                            layout.in_channels, dec.stride)
    packed = np.ascontiguousarray(packed.transpose(0, 2, 3, 4, 1))
    if layout.winograd:
        from .winograd import transform_filters
        packed = transform_filters(packed, layout.summed_filters)
    if layout.phase_major:
        packed = np.ascontiguousarray(packed.transpose(0, 3, 1, 2, 4))
    return packed


def stored_slot(layout: KernelLayout, k):
    """The packed slot whose next block product k's pass prefetches (prefetch.py); the
    direct form's taps are their own slots. With summed_filters, products 0 and 2 read
    slots 0 and 1, and product 1, which reads the block's sum, fetches slot 0 again."""
    return k // 2 if layout.summed_filters else k
