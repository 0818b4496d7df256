"""`SpecializedSession`: a model with a free dimension, run as one static model per input
shape (issue 30).

Our kernel needs static shapes, and TVM 0.27 cannot import the shape arithmetic real
exporters write for a free time axis (runtime/specialize.py). So the first call with a
new combination of input shapes specialises the model to them and opens it as any static
model opens (`open_static`: per-node placement, the split, the measurement against
onnxruntime alone); later calls with those shapes reuse that session. The sessions are
held in a bounded LRU in memory; on disk, each specialisation's TVM artifacts are cached
under its own bytes like any model's (compile/cache.py), so a later process, or a shape
evicted here, reopens without building.
"""
from __future__ import annotations

import collections
import threading

import onnx

from ..graph.errors import ArgumentError
from . import placement as _placement
from . import specialize as _specialize
from .split_session import node_arg_of

# Specialisations held open at once. Each holds its own TVM libraries and onnxruntime
# sessions (for HiFi-GAN V1 one is ~80 TVM segments and as many onnxruntime parts), so the
# bound is the few lengths a server buckets its requests into, not every length seen; a
# shape evicted here reopens from the artifact cache (no build), paying only the open.
SPECIALIZATIONS = 8


class SpecializedSession:
    """Runs `model` (with free input dimensions) through `open_static(specialized_model)`,
    one session per input-shape signature, the `limit` most recently used kept open.

    `placement` and `backend` are those of the specialisation the latest call ran (a node
    the specialisation folded away is FOLDED); before the first call there is none:
    `placement` is None and `backend` says so.
    """

    def __init__(self, model: onnx.ModelProto, open_static, *, limit: int = SPECIALIZATIONS):
        from .loading import NodeArg

        if not isinstance(limit, int) or limit < 1:
            raise ArgumentError(f"limit={limit!r} must be a positive int")
        self._model, self._open_static, self.limit = model, open_static, limit
        self._names = _placement.node_names(model.graph)
        # signature -> (session, the node names of its specialised model)
        self._sessions: collections.OrderedDict = collections.OrderedDict()
        self._latest = None  # the signature of the latest call: never the one evicted
        # `_lock` guards the sessions held and the opens under way, never a build: a
        # call whose shape is open runs while another thread builds a new one. Opening
        # builds (or loads) libraries, one at a time (`_open_lock`: builds share the
        # cores), and a shape two threads ask for at once is opened once (`_opening`:
        # signature -> the event its other callers wait on).
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._opening: dict = {}
        constants = {t.name for t in model.graph.initializer}
        self._inputs = [node_arg_of(NodeArg, v) for v in model.graph.input
                        if v.name not in constants]
        self._outputs = [node_arg_of(NodeArg, v) for v in model.graph.output]

    @property
    def current(self):
        """The session of the specialisation the latest call ran (None before one)."""
        entry = self._sessions.get(self._latest)
        return entry[0] if entry is not None else None

    @property
    def backend(self) -> str:
        current = self.current
        return current.backend if current is not None else \
            "specialized per input shape (no call yet)"

    @property
    def scheduled(self) -> bool:
        return bool(getattr(self.current, "scheduled", False))

    @property
    def placement(self) -> dict[str, str] | None:
        entry = self._sessions.get(self._latest)
        if entry is None:
            return None
        session, names = entry
        inner = getattr(session, "placement", None) or dict.fromkeys(names, session.backend)
        return {name: inner.get(name, _placement.FOLDED) for name in self._names}

    @property
    def specialized(self) -> dict:
        """{"inputs": {name: shape} the latest call ran (empty before one), "held": the
        input shapes held open, least recently used first, "limit": how many may be}."""
        def shapes(key):
            return {name: list(shape) for name, shape in key}

        return {"inputs": shapes(self._latest) if self._latest is not None else {},
                "held": [shapes(key) for key in self._sessions], "limit": self.limit}

    def run(self, output_names, feeds):
        """Outputs named by `output_names` (None: all), for `feeds` keyed by input name."""
        shapes = _specialize.input_shapes(self._model, feeds)
        key = tuple(shapes.items())
        while True:
            with self._lock:
                entry = self._sessions.get(key)
                if entry is not None:
                    self._sessions.move_to_end(key)
                    self._latest = key
                    break
                waiting = self._opening.get(key)
                if waiting is None:
                    opened = self._opening[key] = threading.Event()
            if waiting is not None:
                waiting.wait()  # another thread's open of this shape; then look again
                continue
            try:
                with self._open_lock:
                    model = _specialize.specialized(self._model, shapes)
                    entry = (self._open_static(model), _placement.node_names(model.graph))
                with self._lock:
                    self._sessions[key] = entry
                    while len(self._sessions) > self.limit:
                        self._sessions.popitem(last=False)
                    self._latest = key
            finally:
                with self._lock:
                    del self._opening[key]
                opened.set()  # (after a failed open, a waiter tries it itself)
            break
        return entry[0].run(output_names, feeds)

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

