"""The benchmark suite (workloads.yaml): real transposed-convolution layers in TF terms."""
from __future__ import annotations

import dataclasses
import os
from importlib import resources

import numpy as np
import yaml

from .graph.arguments import make_spec
from .graph.errors import ArgumentError
from .graph.spec import Conv1DTransposeSpec

DEFAULT_WORKLOAD = "hifigan-up1"
_KEYS = {"name", "batch", "width", "cin", "cout", "kernel", "stride", "padding",
         "dilation", "data_format", "out_width"}
_REQUIRED = {"name", "batch", "width", "cin", "cout", "kernel", "stride"}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    width: int
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: str = "SAME"
    dilation: int = 1
    data_format: str = "NWC"
    out_width: int | None = None

    def spec(self, dtype: str = "float32") -> Conv1DTransposeSpec:
        """The validated spec; the output width is W*s (SAME) or (W-1)*s + dk (VALID) unless given."""
        out_width = self.out_width
        if out_width is None:
            dk = (self.kernel - 1) * self.dilation + 1
            out_width = self.width * self.stride if self.padding.upper() == "SAME" else \
                (self.width - 1) * self.stride + dk
        nwc = self.data_format.upper() == "NWC"
        input_shape = (self.batch, self.width, self.cin) if nwc else (self.batch, self.cin, self.width)
        output_shape = (self.batch, out_width, self.cout) if nwc else (self.batch, self.cout, out_width)
        return make_spec(input_shape, (self.kernel, self.cout, self.cin), output_shape,
                         self.stride, self.padding, self.data_format, self.dilation, dtype)

    def arrays(self, dtype: str = "float32", seed: int = 0):
        """Deterministic input and filters (filters scaled like a trained layer's)."""
        spec = self.spec(dtype)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(spec.input_shape).astype(dtype)
        scale = 1.0 / np.sqrt(max(spec.in_channels * spec.kernel_width, 1))
        f = (rng.standard_normal(spec.filters_shape) * scale).astype(dtype)
        return x, f


def default_path() -> str:
    return str(resources.files("conv1d_transpose").joinpath("workloads.yaml"))


def load_workloads(path: str | os.PathLike | None = None) -> list[Workload]:
    """Read a workloads file (the packaged suite by default); errors name the file and row."""
    path = os.fspath(path) if path is not None else default_path()
    try:
        with open(path) as stream:
            document = yaml.safe_load(stream)
    except OSError as error:
        raise ArgumentError(f"workloads file {path!r} cannot be read: {error}") from None
    except yaml.YAMLError as error:
        raise ArgumentError(f"workloads file {path!r} is not valid YAML: {error}") from None
    rows = document.get("workloads") if isinstance(document, dict) else None
    if not isinstance(rows, list):
        raise ArgumentError(f"workloads file {path!r} must have a list under 'workloads:'")
    workloads = []
    for index, row in enumerate(rows):
        where = f"{path!r}, workload {index + 1}"
        if not isinstance(row, dict):
            raise ArgumentError(f"{where}: must be a mapping, got {row!r}")
        unknown = set(row) - _KEYS
        if unknown:
            raise ArgumentError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        missing = _REQUIRED - set(row)
        if missing:
            raise ArgumentError(f"{where}: missing key(s) {sorted(missing)}")
        workload = Workload(**row)
        try:
            workload.spec()
        except ValueError as error:
            raise ArgumentError(f"{where} ({row.get('name')}): {error}") from None
        workloads.append(workload)
    return workloads


def find_workload(name: str, path=None) -> Workload:
    workloads = load_workloads(path)
    for workload in workloads:
        if workload.name == name:
            return workload
    raise ArgumentError(f"workload {name!r} is not in {path or default_path()!r}; "
                        f"known: {', '.join(w.name for w in workloads)}")
