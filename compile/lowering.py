"""Seam for the fast-kernel lowering (issue 4): replace conv1d_transpose in a Relax module.

`apply(mod, target)` returns `(mod, scheduled)`: the module with every conv1d_transpose it
knows how to lower replaced by a scheduled kernel, and whether every such op was.
Until the kernel lands this is the identity, and `scheduled` is False.
"""
from __future__ import annotations


def apply(mod, target):
    return mod, False
