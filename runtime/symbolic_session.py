"""One TVM build for every input width (issue 30): a model with a free time axis whose
every convolution our kernel takes at a symbolic width (compile/kernels/symbolic_width.py).

Where TVM imports the model as it is (HiFi-GAN's generator reads no shape; our own
`to_onnx(dynamic_width=True)`), the whole model is built once, its stride-1 Convs written
as ConvTransposes (`placement.normalized(free_widths=True)`), and that one artifact runs
every width: no build per new length, as `SpecializedSession` needs. Where TVM cannot
import it (the shape arithmetic of torch's and tf2onnx's dynamic exports), or a
compute-heavy node other than a ConvTranspose is left (an LSTM, a strided Conv: those
need the per-node placement, which needs static shapes), `open_symbolic` says None and
the model is specialised per input shape as before.

Under `auto` no model may run slower than on onnxruntime alone, and how the two compare
can change with the width (a short input is launch-bound). So `WidthCheckedSession`
times both on the first call of each width class (each free dimension's bit length:
widths 64-127 are one class) and runs that class on the faster, with a warning where
that is onnxruntime: a measurement per doubling of the length, not per length. Each
class's outcome is remembered in the artifact cache (placement_memo.py, keyed by the
model, target, threads, machine and versions, and the class), so a later process takes
it without timing again.
"""
from __future__ import annotations

import threading
import warnings

import onnx

from ..graph.errors import BackendError
from . import placement as _placement
from . import specialize as _specialize


def whole_model(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model to build once for every width: normalized with its free-width stride-1
    Convs as ConvTransposes; None where a compute-heavy node other than a ConvTranspose
    is left."""
    normal = _placement.normalized(model, free_widths=True)
    if any(node.op_type in _placement.COMPUTE_HEAVY and node.op_type != "ConvTranspose"
           for node in normal.graph.node):
        return None
    kernels = sum(node.op_type == "ConvTranspose" for node in normal.graph.node)
    if not kernels:
        return None
    from .split_session import NWC_INSIDE_KERNELS

    if kernels >= NWC_INSIDE_KERNELS:
        # NWC between the convolutions, as a static model's TVM segment has it
        # (nwc_inside.py, docs/design/placement.md): dynamic HiFi-GAN V1 1.76x onnxruntime
        # so against 1.71x NCW at 50 frames, 1.41x against 1.36x at 200 (Zen 4, busy VM,
        # 2026-12-06 19:12).
        from .nwc_inside import nwc_inside

        return nwc_inside(normal)
    return normal


def open_symbolic(model: onnx.ModelProto, backend: str, open_tvm, open_onnxruntime, *,
                  margin: float, warning: type, memo=None):
    """The session that runs `model` (with free input dimensions) from one TVM build, or
    None where there is none: the model keeps a node that needs static shapes, TVM cannot
    import it, or a convolution missed the scheduled kernel.

    open_tvm(model) and open_onnxruntime(model) open a session of each backend; under
    `auto` (backend) the TVM session is checked per width class (`WidthCheckedSession`,
    TVM kept where it is `margin` times faster; memo: (cache dir, placement_memo key)
    where each class's outcome is remembered, or None)."""
    whole = whole_model(model)
    if whole is None:
        return None
    try:
        session = open_tvm(whole)
    except BackendError:
        return None
    if not getattr(session, "scheduled", False):
        return None
    if backend == "tvm":
        return session
    return WidthCheckedSession(model, session, open_onnxruntime, margin=margin,
                               warning=warning, folded=_placement.folded_nodes(model, whole),
                               memo=memo)


def width_class(shapes: dict, free: dict) -> tuple:
    """The class of a call's input shapes: each free dimension's bit length (a fixed one
    is the same in every call)."""
    return tuple((name, tuple(int(value).bit_length() if not isinstance(dim, int) else value
                              for value, dim in zip(shape, free.get(name, shape))))
                 for name, shape in shapes.items())


class WidthCheckedSession:
    """`auto` over one TVM session for every width: each width class runs on TVM or on
    onnxruntime alone, whichever measured faster on its first call (see the module
    docstring). `placement` and `backend` are the latest call's."""

    def __init__(self, model, tvm_session, open_onnxruntime, *, margin: float,
                 warning: type, folded=frozenset(), memo=None):
        self._model, self._tvm, self._open_onnxruntime = model, tvm_session, open_onnxruntime
        self._memo = memo
        self._onnxruntime = None
        self._margin, self._warning = margin, warning
        self._free = _specialize.free_inputs(model)
        self._names = _placement.node_names(model.graph)
        self._folded = set(folded)
        self.choices: dict = {}  # width class -> (backend name, {backend: seconds a call})
        self._latest = None
        self._lock = threading.Lock()
        self.scheduled = True
        self.specialized = None

    @property
    def current(self):
        """The session the latest call ran (TVM's before any call)."""
        if self._latest is None or self.choices[self._latest][0] == "tvm":
            return self._tvm
        return self._onnxruntime

    @property
    def backend(self) -> str:
        return self.current.backend

    @property
    def placement(self) -> dict:
        backend = self.backend
        return {name: _placement.FOLDED if name in self._folded else backend
                for name in self._names}

    @property
    def width_checks(self) -> dict:
        """{width class: {"backend", "ms": {backend: median ms}}} of the classes timed so
        far (InferenceSession.width_checks)."""
        names = {"tvm": self._tvm.backend, "onnxruntime": "onnxruntime:cpu"}
        return {key: {"backend": names[choice],
                      "ms": {names[name]: seconds * 1e3 for name, seconds in times.items()}}
                for key, (choice, times) in self.choices.items()}

    @property
    def measured(self) -> dict | None:
        """The latest call's class's times ({'tvm': s, 'onnxruntime': s})."""
        return self.choices[self._latest][1] if self._latest is not None else None

    def _measure(self, feeds, key) -> tuple:
        from . import placement_memo
        from .split_session import median_times

        remembered = None
        if self._memo is not None:
            class_key = placement_memo.width_class_key(self._memo[1], key)
            remembered = placement_memo.read(self._memo[0], class_key,
                                             choices=("tvm", "onnxruntime"))
        if remembered is not None:
            choice, times = remembered["choice"], remembered["times"]
            when = (f" (at {remembered['measured_at']}, remembered in the artifact cache; "
                    f"{placement_memo.ENV_REMEASURE}=1 measures again)")
        else:
            if self._onnxruntime is None:
                self._onnxruntime = self._open_onnxruntime(self._model)
            times = median_times({"tvm": self._tvm, "onnxruntime": self._onnxruntime}, feeds)
            choice = "tvm" if times["tvm"] * self._margin <= times["onnxruntime"] else \
                "onnxruntime"
            when = ""
            if self._memo is not None:
                placement_memo.write(self._memo[0], class_key, choice, times=times)
        if choice == "onnxruntime":
            if self._onnxruntime is None:
                self._onnxruntime = self._open_onnxruntime(self._model)
            shapes = {name: list(getattr(value, "shape", ())) for name, value in feeds.items()}
            warnings.warn(f"backend='auto' runs inputs of shapes like {shapes} on "
                          f"onnxruntime:cpu alone: it measured "
                          f"{times['onnxruntime'] * 1e3:.3g} ms a call on this machine "
                          f"against {times['tvm'] * 1e3:.3g} ms with {self._tvm.backend}"
                          f"{when}", self._warning, stacklevel=4)
        return choice, times

    def run(self, output_names, feeds):
        """Outputs named by `output_names` (None: all), for `feeds` keyed by input name."""
        key = width_class(_specialize.input_shapes(self._model, feeds), self._free)
        with self._lock:
            if key not in self.choices:
                self.choices[key] = self._measure(feeds, key)
            self._latest = key
            session = self._tvm if self.choices[key][0] == "tvm" else self._onnxruntime
        return session.run(output_names, feeds)

    def get_inputs(self):
        return self._tvm.get_inputs()

    def get_outputs(self):
        return self._tvm.get_outputs()
