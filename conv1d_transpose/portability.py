"""The portability matrix: which ONNX ConvTranspose forms give TF's answer on which consumer.

    from conv1d_transpose.portability import measure, sweep_cases
    matrix = measure(sweep_cases(every=8), jobs=2)
    print(matrix.to_markdown())

or `conv1d-transpose portability [--full] [--markdown FILE]`.

Forms (all from one spec; the graph around the node is the exported one: Transpose (NWC)
-> ConvTranspose -> Transpose):

- `output_shape` with `auto_pad` NOTSET, SAME_UPPER (our default export) or SAME_LOWER;
- explicit `pads` + `output_padding` (our `portable=True` export).

Consumers: onnxruntime (CPU), `onnx.reference.ReferenceEvaluator`, TVM's raw importer
(`relax.frontend.onnx.from_onnx` + `tvm.compile` for the host, no legalization), and our
TVM path (`compile_model`: legalize, import, lowering, build; run by `TVMSession`).

"TF's answer" is the float64 numpy reference (`graph.reference`, itself tested against
`tf.nn.conv1d_transpose`), within float32 tolerance (`graph.max_error`). A consumer that
raises counts as wrong, recorded under the exception's type name.

The cases are the foundation sweep's (`graph.sweeps.foundation_sweep`, which the tests
run too: K 1..6, s 1..5, d 1..3, SAME and VALID, every valid output width for W 1 and 4,
NWC and NCW), in float32, with batch cycling 1, 2: the sweep's empty tensors (batch 0,
width 0, kernel 0) are left out, since an empty output is zeros whatever the padding form
(and width-0 / kernel-0 inputs are not expressible in ONNX). `every=n` keeps every n-th
case, deterministically.

To keep this fast, cases are measured in chunks: one ONNX model holds many independent
copies of the op (one input and one output each) and each consumer builds and runs it
once. When a chunk raises, its cases are measured one model at a time, so an error is
charged to the cases that cause it.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import datetime
import os
import platform
import shutil
import tempfile
import time
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import max_error
from .graph.onnx_export import conv_transpose_attributes, element_type, op_nodes
from .graph.spec import Conv1DTransposeSpec
from .graph.sweeps import foundation_sweep, random_arrays

OPSET = 17
CHUNK = 16
DEFAULT_EVERY = 8


# --- forms --------------------------------------------------------------------------

def _output_shape_form(auto_pad: str | None):
    def attributes(spec: Conv1DTransposeSpec) -> dict:
        result = conv_transpose_attributes(spec, "output_shape")
        if auto_pad is None:
            del result["auto_pad"]
        else:
            result["auto_pad"] = auto_pad
        return result
    return attributes


@dataclasses.dataclass(frozen=True)
class Form:
    key: str
    label: str
    attributes: Callable[[Conv1DTransposeSpec], dict]


FORMS = (
    Form("notset", "`output_shape`, auto_pad NOTSET", _output_shape_form(None)),
    Form("same_upper", "`output_shape` + SAME_UPPER (default export)",
         _output_shape_form("SAME_UPPER")),
    Form("same_lower", "`output_shape` + SAME_LOWER", _output_shape_form("SAME_LOWER")),
    Form("explicit", "`pads` + `output_padding` (`portable=True`)",
         lambda spec: conv_transpose_attributes(spec, "explicit")),
)
FORM_KEYS = tuple(form.key for form in FORMS)


# --- consumers ----------------------------------------------------------------------

def _run_onnxruntime(model: onnx.ModelProto, feeds: dict, context: dict) -> list:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if context.get("threads"):
        options.intra_op_num_threads = context["threads"]
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _run_reference(model: onnx.ModelProto, feeds: dict, context: dict) -> list:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(model).run(None, feeds))


def _run_tvm_raw(model: onnx.ModelProto, feeds: dict, context: dict) -> list:
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    if "tvm_target" not in context:
        from .compile.targets import get_target
        context["tvm_target"] = get_target("host").tvm_target()
    mod = from_onnx(model, opset=OPSET, keep_params_in_input=False)
    executable = tvm.compile(mod, target=context["tvm_target"])
    vm = relax.VirtualMachine(executable, tvm.cpu(0))
    names = [value.name for value in model.graph.input]
    result = vm["main"](*[tvm.runtime.tensor(feeds[name]) for name in names])
    values = list(result) if len(model.graph.output) > 1 else [result]
    return [value.numpy() for value in values]


def _run_tvm_ours(model: onnx.ModelProto, feeds: dict, context: dict) -> list:
    from .runtime.tvm_backend import TVMSession

    session = TVMSession(model, "host", cache_dir=context["cache_dir"],
                         threads=context.get("threads"))
    return session.run(None, feeds)


def _run_openvino(model: onnx.ModelProto, feeds: dict, context: dict) -> list:
    """OpenVINO's CPU plugin in float32 precision (issue 31: an edge user's runtime)."""
    import openvino as ov

    core = context.setdefault("openvino_core", ov.Core())
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if context.get("threads"):
        config["INFERENCE_NUM_THREADS"] = int(context["threads"])
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  config)
    names = [value.name for value in model.graph.input]
    result = compiled.create_infer_request().infer([feeds[name] for name in names])
    return [np.asarray(result[output]) for output in compiled.outputs]


def _run_litert(model: onnx.ModelProto, feeds: dict, context: dict) -> list:
    """LiteRT with XNNPACK on each call converted from TensorFlow (the bench's `litert`
    backend). It reads no ONNX, so its verdict is the same for every form; a call is
    converted once per process and reused for the other forms."""
    from .peers import litert_runner

    props = {p.key: p.value for p in model.metadata_props}
    specs = [Conv1DTransposeSpec.from_json(text) for text in json.loads(props[CASES_KEY])]
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    cache = context.setdefault("litert_outputs", {})
    outputs = []
    for i, spec in enumerate(specs):
        x = feeds[f"input_{i}"]
        key = (spec.to_json(), x.tobytes())
        if key not in cache:
            filters = weights[f"case{i}/filters_iok"].transpose(2, 1, 0)  # TF's [K, out, in]
            cache[key] = litert_runner(spec, np.ascontiguousarray(filters),
                                       context.get("threads") or 1).call(x)
        outputs.append(cache[key])
    return outputs


@dataclasses.dataclass(frozen=True)
class Consumer:
    key: str
    label: str
    run: Callable[[onnx.ModelProto, dict, dict], list]


CONSUMERS = (
    Consumer("onnxruntime", "onnxruntime", _run_onnxruntime),
    Consumer("reference", "onnx ReferenceEvaluator", _run_reference),
    Consumer("tvm_raw", "TVM importer (raw)", _run_tvm_raw),
    Consumer("tvm", "our TVM path", _run_tvm_ours),
    Consumer("openvino", "OpenVINO (CPU)", _run_openvino),
    Consumer("litert", "LiteRT (TFLite from TF)", _run_litert),
)
CONSUMER_KEYS = tuple(consumer.key for consumer in CONSUMERS)
# Consumers from an optional extra -> the module they need; left out where it is missing.
OPTIONAL_CONSUMERS = {"openvino": ("openvino",), "litert": ("ai_edge_litert", "tensorflow")}
CASES_KEY = "conv1d_transpose.portability_cases"


# --- cases --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    spec: Conv1DTransposeSpec
    seed: int

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return random_arrays(self.spec.input_shape, self.spec.filters_shape, "float32",
                             self.seed)


def sweep_cases(every: int = 1) -> list[Case]:
    """The foundation sweep's non-empty layers in float32; every `every`-th one.

    Batch cycles 1, 2; each case's seed is its index in the whole sweep, so a case draws
    the same arrays whatever `every` is.
    """
    if every < 1:
        raise ValueError(f"every={every!r}: must be a positive integer")
    cases = [Case(layer.name, layer.spec("float32"), seed=index)
             for index, layer in enumerate(foundation_sweep(batches=(1, 2), empty=False))]
    return cases[::every]


# --- models -------------------------------------------------------------------------

def _model(cases: list[Case], form: Form) -> tuple[onnx.ModelProto, dict, list]:
    """One model holding the op once per case (input `input_i`, output `output_i`)."""
    nodes, inputs, outputs, initializers, feeds, arrays = [], [], [], [], {}, []
    for i, case in enumerate(cases):
        spec = case.spec
        x, f = case.arrays()
        arrays.append((x, f))
        prefix = f"case{i}"
        weights = f"{prefix}/filters_iok"
        case_nodes = op_nodes(spec, f"input_{i}", weights, f"output_{i}", prefix, "explicit")
        conv = next(node for node in case_nodes if node.op_type == "ConvTranspose")
        del conv.attribute[:]
        conv.attribute.extend(helper.make_attribute(key, value)
                              for key, value in sorted(form.attributes(spec).items()))
        nodes.extend(case_nodes)
        initializers.append(numpy_helper.from_array(
            np.ascontiguousarray(f.transpose(2, 1, 0)), weights))
        elem = element_type(spec.dtype)
        inputs.append(helper.make_tensor_value_info(f"input_{i}", elem, list(x.shape)))
        # No declared output shape: a consumer's wrong shape is measured, not refused.
        outputs.append(helper.make_tensor_value_info(f"output_{i}", elem, None))
        feeds[f"input_{i}"] = x
    graph = helper.make_graph(nodes, f"portability_{form.key}", inputs, outputs,
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="conv1d-transpose portability")
    model.ir_version = 8
    # The calls themselves, for a consumer that does not read ONNX (LiteRT).
    helper.set_model_props(model, {CASES_KEY: json.dumps([c.spec.to_json() for c in cases])})
    return model, feeds, arrays


def _verdict(output, x, f, spec) -> str:
    output = np.asarray(output)
    if output.shape != spec.output_shape:
        return "wrong shape"
    error, ok = max_error(output, x, f, spec)
    return "ok" if ok else "wrong values"


# --- measuring ----------------------------------------------------------------------

@dataclasses.dataclass
class Cell:
    """One (form, consumer): how many cases agree with TF, and how the others fail."""

    agree: int = 0
    total: int = 0
    failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)  # failure kind -> first case

    def add(self, case: Case, verdict: str):
        self.total += 1
        if verdict == "ok":
            self.agree += 1
            return
        self.failures[verdict] += 1
        self.examples.setdefault(verdict, case.name)

    @property
    def ratio(self) -> str:
        return f"{self.agree}/{self.total}"

    def summary(self) -> str:
        """'120/120', or '98/120 (22 wrong values)'."""
        if not self.failures:
            return self.ratio
        parts = ", ".join(f"{n} {kind}" for kind, n in self.failures.most_common())
        return f"{self.ratio} ({parts})"


@dataclasses.dataclass
class PortabilityMatrix:
    cells: dict  # (form key, consumer key) -> Cell
    forms: tuple
    consumers: tuple
    cases: int
    selection: str
    info: dict
    seconds: float

    def counts(self) -> dict:
        """{(form, consumer): 'agree/total'}."""
        return {key: cell.ratio for key, cell in self.cells.items()}

    def all_agree(self, form: str, consumer: str) -> bool:
        cell = self.cells[form, consumer]
        return cell.total > 0 and cell.agree == cell.total

    def to_json(self) -> dict:
        return {
            "selection": self.selection, "cases": self.cases, "info": self.info,
            "seconds": round(self.seconds, 1),
            "cells": [{"form": f, "consumer": c, "agree": cell.agree, "total": cell.total,
                       "failures": dict(cell.failures), "examples": cell.examples}
                      for (f, c), cell in self.cells.items()],
        }

    def header(self) -> str:
        info = self.info
        return (f"{self.cases} cases ({self.selection}), float32, measured "
                f"{info['date']} on {info['machine']}; onnxruntime {info['onnxruntime']}, "
                f"onnx {info['onnx']}, TVM {info['tvm']}; {self.seconds:.0f} s")

    def to_markdown(self) -> str:
        consumers = [c for c in CONSUMERS if c.key in self.consumers]
        lines = ["| ConvTranspose form | " + " | ".join(c.label for c in consumers) + " |",
                 "|---|" + "---|" * len(consumers)]
        for form in FORMS:
            if form.key not in self.forms:
                continue
            cells = [self.cells[form.key, c.key].summary() for c in consumers]
            lines.append(f"| {form.label} | " + " | ".join(cells) + " |")
        examples = []
        for (form_key, consumer_key), cell in self.cells.items():
            for kind, case in cell.examples.items():
                examples.append(f"{form_key} on {consumer_key}: {kind}, e.g. `{case}`")
        text = "\n".join(lines) + "\n\n" + self.header() + ".\n"
        if examples:
            text += "\nFirst failing case of each kind: " + "; ".join(examples) + ".\n"
        return text

    def to_rich_table(self):
        from rich.table import Table

        table = Table(title="Agreement with TF (the numpy reference) per ConvTranspose form "
                            "and consumer", caption=self.header())
        consumers = [c for c in CONSUMERS if c.key in self.consumers]
        table.add_column("form")
        for consumer in consumers:
            table.add_column(consumer.label, justify="right")
        for form in FORMS:
            if form.key not in self.forms:
                continue
            row = []
            for consumer in consumers:
                cell = self.cells[form.key, consumer.key]
                style = "green" if cell.agree == cell.total else "red"
                row.append(f"[{style}]{cell.summary()}[/{style}]")
            table.add_row(form.label.replace("`", ""), *row)
        return table


def machine_info() -> dict:
    """Date, machine and versions for the matrix's header."""
    import onnxruntime

    from .compile.machine import cpu_model

    cpu = cpu_model()
    try:
        from importlib.metadata import version
        tvm_version = version("apache-tvm")
    except Exception:
        tvm_version = "not installed"
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
                   f"Python {platform.python_version()}",
        "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "tvm": tvm_version,
    }


def measure(cases: Iterable[Case] | None = None, forms: Iterable[str] = FORM_KEYS,
            consumers: Iterable[str] = CONSUMER_KEYS, *, chunk: int = CHUNK,
            jobs: int = 1, progress: Callable[[str], None] | None = None,
            selection: str | None = None) -> PortabilityMatrix:
    """Measure every (form, consumer) on `cases` (default: `sweep_cases(every=DEFAULT_EVERY)`).

    With `jobs` > 1, that many worker processes (spawned: a script calling this needs
    the `if __name__ == "__main__":` guard) build and run the chunks; TVM's compiles
    dominate the time. Returns a `PortabilityMatrix`; `.counts()` gives
    {(form, consumer): 'agree/total'}.
    """
    if cases is None:
        cases = sweep_cases(every=DEFAULT_EVERY)
        selection = selection or f"every {DEFAULT_EVERY}th case of the foundation sweep"
    cases = list(cases)
    forms, consumers = set(forms), set(consumers)
    unknown = (forms - set(FORM_KEYS)) | (consumers - set(CONSUMER_KEYS))
    if unknown:
        raise ValueError(f"unknown forms/consumers {sorted(unknown)}; forms: {FORM_KEYS}, "
                         f"consumers: {CONSUMER_KEYS}")
    forms = tuple(f.key for f in FORMS if f.key in forms)  # table order
    consumers = tuple(c.key for c in CONSUMERS if c.key in consumers)
    missing = [c for c in consumers if any(importlib.util.find_spec(module) is None
                                           for module in OPTIONAL_CONSUMERS.get(c, ()))]
    if missing and progress:
        progress(f"not installed, left out: {', '.join(missing)} "
                 f"(pip install 'conv1d-transpose[peers,reference]')")
    consumers = tuple(c for c in consumers if c not in missing)
    jobs = max(1, int(jobs))
    started = time.perf_counter()
    cells = {(f, c): Cell() for f in forms for c in consumers}
    chunks = [cases[start:start + chunk] for start in range(0, len(cases), chunk)]
    tasks = [(f, c, i) for f in forms for c in consumers for i in range(len(chunks))]
    pending = collections.Counter((f, c) for f, c, _ in tasks)
    cache_dir = tempfile.mkdtemp(prefix="conv1d-transpose-portability-")

    def record(task, verdicts):
        form, consumer, index = task
        for case, verdict in zip(chunks[index], verdicts):
            cells[form, consumer].add(case, verdict)
        pending[form, consumer] -= 1
        if progress and not pending[form, consumer]:
            progress(f"{form:>10} on {consumer:<11} {cells[form, consumer].summary()}")

    try:
        if jobs == 1:
            context = {"cache_dir": cache_dir}
            for task in tasks:
                form, consumer, index = task
                record(task, _measure_chunk(chunks[index], form, consumer, context))
        else:
            import concurrent.futures
            import multiprocessing

            # spawn: TVM's and onnxruntime's thread pools do not survive a fork.
            with concurrent.futures.ProcessPoolExecutor(
                    jobs, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init, initargs=(cache_dir,)) as pool:
                futures = {pool.submit(_worker_chunk, chunks[i], f, c): (f, c, i)
                           for f, c, i in tasks}
                for future in concurrent.futures.as_completed(futures):
                    record(futures[future], future.result())
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return PortabilityMatrix(cells=cells, forms=forms, consumers=consumers, cases=len(cases),
                             selection=selection or f"{len(cases)} given cases",
                             info=machine_info(), seconds=time.perf_counter() - started)


_WORKER_CONTEXT: dict = {}


def _worker_init(cache_dir: str) -> None:
    import warnings

    # One thread per worker: the workers are the parallelism.
    os.environ["TVM_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    warnings.simplefilter("ignore")
    _WORKER_CONTEXT.update(cache_dir=cache_dir, threads=1)


def _worker_chunk(cases, form, consumer):
    return _measure_chunk(cases, form, consumer, _WORKER_CONTEXT)


def _measure_chunk(cases: list[Case], form_key: str, consumer_key: str,
                   context: dict) -> list[str]:
    """The verdict of each case ('ok', 'wrong shape', 'wrong values', 'raises <Type>')."""
    form = next(f for f in FORMS if f.key == form_key)
    consumer = next(c for c in CONSUMERS if c.key == consumer_key)
    model, feeds, arrays = _model(cases, form)
    try:
        outputs = consumer.run(model, feeds, context)
        if len(outputs) != len(cases):
            raise RuntimeError(f"{len(outputs)} outputs for {len(cases)} cases")
    except Exception as error:  # a consumer that raises is wrong; find the cases that raise
        if len(cases) == 1:
            return [f"raises {type(error).__name__}"]
        return [verdict for case in cases
                for verdict in _measure_chunk([case], form_key, consumer_key, context)]
    return [_verdict(output, x, f, case.spec)
            for case, output, (x, f) in zip(cases, outputs, arrays)]
