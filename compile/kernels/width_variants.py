"""One symbolic-width kernel with more than one plan, the width choosing at run time
(issue 30).

A symbolic-width kernel (symbolic_width.py) is planned at a reference width, but the
static kernel's plan changes with the width, and where it changes the one plan loses:
- Narrow inputs take the "filters" loop order (each panel of filters read once, the few
  rows streamed past it), and the kernel planned at the 256-wide reference runs "rows":
  hifigan-up1 at 50 frames, kernel ms, interleaved in one process, Zen 4, 2 threads,
  2026-12-06 (`tools/cpu/symbolic_plans.py hifigan-up1 50,200 50,256`): static 0.902,
  planned at 50 0.896, at 256 1.050; at 200 frames the "filters" plan loses (3.765
  against 3.495), so neither plan serves both.
- In NCW the direct form stores each vector of output channels to as many output rows;
  when those rows are a multiple of 4 KiB apart they share one set of L1 lines, and a
  symbolic-width kernel, which computes each row's address at run time, suffers most:
  hifigan-up4 NCW, kernel ms, planned at 256, same day and tool: input width 25600
  (output rows 200 KiB apart) 6.83 -> 5.50 through an NWC copy transposed at the end,
  128000 34.11 -> 28.40; in an ad-hoc trial of both stores, 26112 6.1 -> 4.2, while
  widths whose rows are not 4 KiB-aligned lost 0-9% through the copy (25632 3.12 ->
  3.39, 25728 2.92 -> 3.00), so only the aligned ones take it.

So the kernel holds each plan as a loop nest of its own under a condition on `width`,
every nest reading the same packed filters (a plan whose filters differ is not taken):
`variants` says which, `build` schedules each one and `merged` joins them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .folding import kernel_geometry
from .polyphase import Geometry, decompose
from .symbolic_width import VARIABLE, SymbolicWidth, layer_at, smallest_width

# Output rows this many bytes apart (or a multiple) map to the same set of L1 lines
# (x86-64's 4 KiB pages index L1 with the low 12 bits).
ALIASED_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class Variant:
    """One loop nest of the kernel: taken when `condition` (TIR text in `width`; None:
    otherwise) holds, built with `plan` and, in NCW, `ncw_copy` stores."""

    condition: str | None
    plan: object  # schedule_cpu.CpuPlan
    ncw_copy: bool = False
    why: str = "the reference plan"


def _layer(geometry: Geometry):
    return layer_at(geometry, geometry.out_width - geometry.stride * geometry.in_width)


def _layout(geometry: Geometry, plan):
    from .layout import plan_layout
    from .schedule_cpu_winograd import blocks_reduction

    return plan_layout(geometry, plan.tiling, plan.winograd, plan.phase_major,
                       summed_filters=blocks_reduction(plan, decompose(geometry).stride))


def _filters_key(layout) -> tuple:
    """What a layout's packed filters depend on (layout.pack_filters)."""
    return (layout.filters_shape, layout.winograd, layout.phase_major,
            layout.summed_filters)


def variants(geometry: Geometry, cpu, width: SymbolicWidth) -> list[Variant]:
    """The nests of the kernel for `geometry`'s layer (at the reference width) on `cpu`
    (schedule_cpu.CpuTarget), the last one unconditional."""
    from .schedule_cpu import symbolic_plan

    layer = _layer(geometry)
    kernel = kernel_geometry(geometry)

    def plan_at(w):
        return symbolic_plan(kernel_geometry(layer(w)), cpu, width)[0]

    reference = plan_at(geometry.in_width)
    reference_layout = _layout(kernel, reference)
    out = []
    # (One store block for all phases: the copy's transpose then reads what one block
    # wrote, which TVM's compute_at needs; phases in several groups, or phases with no
    # taps, write the copy in pieces. Not a blocked plan either, whose stores sit in its
    # chunk of reduction blocks: the same schedule error.)
    if (kernel.data_format == "NCW" and kernel.folded_stride == 1
            and not reference.winograd and not reference.blocked
            and len(reference_layout.groups) == 1 and not reference_layout.zero_blocks):
        itemsize = np.dtype(kernel.dtype).itemsize
        out.append(Variant(f"{width.layer_width.text()} * {itemsize} % {ALIASED_BYTES} == 0",
                           reference, ncw_copy=True,
                           why=f"output rows a multiple of {ALIASED_BYTES} bytes apart"))
    # The narrowest widths that the static kernel would run in another loop order: the
    # plan of the widest of them, below which it runs (narrower still, the static plan
    # only shrinks its register tile).
    narrow = next(((w, plan) for w in range(geometry.in_width - 1,
                                            smallest_width(width) - 1, -1)
                   if (plan := plan_at(w)).order != reference.order), None)
    if narrow is not None:
        w, plan = narrow
        if _filters_key(_layout(kernel, plan)) == _filters_key(reference_layout):
            out.append(Variant(f"{VARIABLE} <= {w}", plan,
                               why=f"the plan of {w} wide ({plan.order} order)"))
    out.append(Variant(None, reference))
    return out


def build(geometry: Geometry, target, width: SymbolicWidth):
    """(scheduled PrimFunc, KernelLayout, variants) of the symbolic-width kernel for
    `geometry`'s layer (at the reference width): one nest per variant, in one PrimFunc."""
    from .schedule_cpu import build as build_kernel, describe_target

    chosen = variants(geometry, describe_target(target), width)
    kernel = kernel_geometry(geometry)
    built = []
    for variant in chosen[:-1]:
        try:
            built.append(build_kernel(kernel, target, cpu_plan=variant.plan, width=width,
                                      ncw_copy=variant.ncw_copy))
        except Exception:  # noqa: BLE001  (a nest that TVM cannot schedule is left out:
            # the reference plan's nest serves those widths, as it would without nests)
            built.append(None)
    built.append(build_kernel(kernel, target, cpu_plan=chosen[-1].plan, width=width))
    chosen = [v for v, b in zip(chosen, built) if b is not None]
    built = [b for b in built if b is not None]
    layout = built[-1][1]
    if len(built) == 1:
        return built[0][0], layout, chosen
    return merged([(v.condition, func) for v, (func, _) in zip(chosen, built)]), layout, \
        chosen


def merged(cases):
    """One PrimFunc running the first of `cases` [(condition, PrimFunc)] whose condition
    holds (the last one's is None), each PrimFunc's body a nest of its own.

    The PrimFuncs have the same signature (the width kernel's buffers and variable); they
    are joined as TVMScript, each body in a block of its own under an if/elif/else, and
    parsed back (TIR has no way to graft one PrimFunc's body, with its own buffer and
    variable objects, into another's)."""
    import tvm

    head, bodies = None, []
    for _, func in cases:
        lines = func.script().splitlines()
        at = next(i for i, line in enumerate(lines) if line.strip().startswith("T.func_attr"))
        body = lines[at + 1:]
        if body and body[0].strip() == '# with T.sblock("root"):':
            body = body[1:]
        if head is not None and lines[:at + 1] != head:
            raise ValueError("width variants with different signatures")
        head = lines[:at + 1]
        bodies.append(body)
    text = list(head)
    for index, ((condition, _), body) in enumerate(zip(cases, bodies)):
        if condition is None:
            text.append("    else:")
        else:
            text.append(f"    {'if' if index == 0 else 'elif'} {condition}:")
        text.append(f'        with T.sblock("variant{index}"):')
        text += ["        " + line for line in body]
    parsed = tvm.script.from_source("\n".join(text) + "\n")
    return parsed if isinstance(parsed, tvm.tirx.PrimFunc) else parsed["main"]
