"""The kernel's two forms, and the one a layout asks for: the direct form
(source_direct.py) or, with `KernelLayout.winograd`, the Winograd F(2,r) form
(winograd.py, source_winograd.py). Which form a layer gets is the CPU plan's choice
(`schedule_cpu.plan`); CUDA schedules the direct form only.
"""
from __future__ import annotations

from .layout import KernelLayout
from .source_direct import kernel_source
from .source_winograd import winograd_source


def build_primfunc(layout: KernelLayout, name: str = "conv1d_transpose_polyphase",
                   width=None, ncw_copy: bool = False):
    """The unscheduled kernel as a PrimFunc `(x, packed_filters) -> out`; with `width`
    (symbolic_width.SymbolicWidth), for every input width; `ncw_copy`: the direct form's
    NCW stores through an NWC copy (source_direct.kernel_source)."""
    import tvm
    from tvm.script import tirx as T  # noqa: F401  (used by the parsed source)

    if layout.winograd:
        return tvm.script.from_source(winograd_source(layout, name, width))
    return tvm.script.from_source(kernel_source(layout, name, width, ncw_copy))
