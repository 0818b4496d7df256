"""The fast-kernel lowering (issue 4): replace conv1d_transpose in a Relax module.

`apply(mod, target)` returns `(mod, scheduled)`. It matches, in every Relax function,

- `permute_dims(x, [0, 2, 1]) -> nn.conv1d_transpose -> permute_dims([0, 2, 1])` (the NWC
  graph of graph/onnx_export.py) and replaces the three with one kernel that reads and
  writes NWC directly, and
- any other `nn.conv1d_transpose` (the NCW graph) with the NCW kernel,

when the weights are constants (filters are packed per phase and tap here, at compile
time) and groups == 1. The kernel is `compile/kernels`' polyphase PrimFunc, called with
`call_tir`, marked scheduled (dlight and MetaSchedule leave it alone) and opaque (FuseOps
leaves it alone: fusing would hand a scheduled kernel back to FuseTIR). `scheduled` is
True only when every conv1d_transpose was replaced; otherwise the module comes back
unchanged, for the caller to fall back (or to let TVM's slow legalization run).
"""
from __future__ import annotations

import functools

import numpy as np

from . import records
from .kernels import (schedule_cpu, schedule_cpu_width, schedule_cuda, source_phase_width,
                      source_width, width_variants)
from .kernels.symbolic_width import REFERENCE_WIDTH, layer_at
from .kernels.symbolic_width import fit as symbolic_width_fit
from .kernels import (KERNEL_VERSION, Geometry, build_kernel, fold_filters, kernel_geometry,
                      pack_filters, target_family)

__all__ = ["KERNEL_VERSION", "Conv1DTransposeMatch", "apply", "find_conv1d_transposes"]

CONV = "relax.nn.conv1d_transpose"
PERMUTE = "relax.permute_dims"
_SWAP = (0, 2, 1)
_DTYPES = ("float16", "float32", "float64")
# relay/relax OpPatternKind: kOpaque.
_OPAQUE = 8
# The "conv1d_transpose.schedule" attribute of a kernel for every input width, alone
# (the polyphase kernel) or as the prefix of its form's ("symbolic-width:width"):
# compile/build.py compiles such kernels in an LLVM module of their own.
SYMBOLIC_WIDTH = "symbolic-width"


def apply(mod, target):
    """Replace every conv1d_transpose of `mod` by the polyphase kernel for `target`.

    Args:
      mod: a Relax IRModule (from `relax.frontend.onnx.from_onnx` with the weights kept
        as constants).
      target: a `tvm.target.Target` (or what `Target()` accepts) of kind llvm or cuda.
    Returns:
      `(new module, True)`, or `(mod unchanged, False)` when the module has no
      conv1d_transpose or one of them cannot be lowered: weights that are not constants
      or not finite, groups != 1, shapes other than a static width/channels with a
      static or symbolic batch, layouts other than NCW/IOW, dtypes other than
      float16/32/64, or a target kind without a schedule.
    """
    import tvm
    from tvm import relax

    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    if target_family(target) is None:
        return mod, False
    functions = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, relax.Function)]
    plans = {}
    total = 0
    for _, func in functions:
        found = find_conv1d_transposes(func)
        total += len(found)
        for conv_var, plan in found.items():
            if plan is None:
                return mod, False
            plans[conv_var] = plan
    if not total:
        return mod, False
    rewriter = _rewriter_class()(mod, target, plans)
    for gv, func in functions:
        rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    new_mod = rewriter.builder_.finalize()
    if rewriter.replaced != total:
        return mod, False
    # The matched permute_dims/conv bindings are dead now.
    new_mod = relax.transform.DeadCodeElimination()(new_mod)
    return new_mod, True


class Conv1DTransposeMatch:
    """One matched conv1d_transpose: what the kernel reads and what it replaces."""

    def __init__(self, geometry, data, weights, outputs, width=None):
        self.geometry = geometry
        self.data = data  # the Relax var the kernel reads (x for NWC, the conv input for NCW)
        self.weights = weights  # IOW numpy array
        self.outputs = outputs  # vars whose binding becomes the call: permute(s) or the conv
        # A symbolic input width: kernels.symbolic_width.SymbolicWidth, `geometry` at its
        # reference width (one kernel for every width).
        self.width = width


def find_conv1d_transposes(func) -> dict:
    """{conv var: Conv1DTransposeMatch, or None where it cannot be lowered} for the
    conv1d_transpose bindings of a Relax function."""
    from tvm import relax

    values, uses = {}, {}

    def count(expr):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    def visit(expr):
        count(expr)

    relax.analysis.post_order_visit(func.body, visit)
    for block in func.body.blocks:
        for binding in block.bindings:
            values[binding.var] = binding.value
    users = {}
    for var, value in values.items():
        if isinstance(value, relax.Call):
            for arg in value.args:
                if isinstance(arg, relax.Var):
                    users.setdefault(arg, []).append(var)

    found = {}
    for var, value in values.items():
        if _op_name(value) != CONV:
            continue
        found[var] = _match(var, value, values, users, uses)
    return found


def _match(conv_var, call, values, users, uses):
    from tvm import relax

    attrs = call.attrs
    data, weight = call.args
    if isinstance(weight, relax.Var) and weight in values:
        weight = values[weight]
    weights = _constant(weight)
    if weights is None or int(attrs.groups) != 1:
        return None
    if not np.isfinite(weights).all():
        # The kernel reads zero-padded input rows at the edges, where 0 * Inf = NaN would
        # appear in outputs that no real input reaches (TF leaves them finite).
        return None
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCW", "IOW", "NCW"):
        return None
    in_shape, in_dtype = _static(data)
    out_shape, out_dtype = _static(conv_var)
    if in_shape is None or out_shape is None or len(in_shape) != 3 or weights.ndim != 3:
        return None
    symbolic = not isinstance(in_shape[2], int) or not isinstance(out_shape[2], int)
    if not (in_shape[0] == out_shape[0] if isinstance(in_shape[0], int)
            else in_shape[0].same_as(out_shape[0])):
        return None
    if in_dtype not in _DTYPES or out_dtype != in_dtype or str(weights.dtype) != in_dtype:
        return None
    batch, cin, width = in_shape
    batch = batch if isinstance(batch, int) else None  # symbolic: any batch at run time
    _, cout, out_width = out_shape
    if weights.shape[:2] != (cin, cout):
        return None
    stride, dilation = int(attrs.strides[0]), int(attrs.dilation[0])
    pad_begin, pad_end = (int(p) for p in attrs.padding)
    output_padding = int(attrs.output_padding[0])
    kernel = weights.shape[2]
    symbolic_width = None
    if symbolic:
        # One kernel for every width (kernels/symbolic_width.py): the output width must
        # be the ONNX formula's, s*W + c, in the input's own width variable.
        out_offset = (kernel - 1) * dilation + 1 - stride - pad_begin - pad_end + output_padding
        if not _is_width(width, out_width, stride, out_offset) or 0 in (cin, cout, kernel):
            return None
        symbolic_width = symbolic_width_fit(layer_at(
            Geometry(None, 0, cin, 0, cout, kernel, stride, dilation, pad_begin, "NCW",
                     in_dtype), out_offset))
        if symbolic_width is None:
            return None
        width, out_width = REFERENCE_WIDTH, stride * REFERENCE_WIDTH + out_offset
    if out_width != (width - 1) * stride + (kernel - 1) * dilation + 1 - pad_begin - pad_end \
            + output_padding or min(cin, width, cout, out_width, kernel) < 0 \
            or 0 in (cin, width, cout, out_width, kernel):
        # (An empty input or kernel: the op returns zeros without compiling.)
        return None

    data_format, source, outputs = "NCW", data, (conv_var,)
    producer = values.get(data) if isinstance(data, relax.Var) else None
    consumers = users.get(conv_var, [])
    if (_is_swap(producer) and consumers and uses.get(conv_var, 0) == len(consumers)
            and all(_is_swap(values[c]) for c in consumers)):
        data_format, source, outputs = "NWC", producer.args[0], tuple(consumers)
    geometry = Geometry(batch, width, cin, out_width, cout, kernel, stride, dilation,
                        pad_begin, data_format, in_dtype)
    return Conv1DTransposeMatch(geometry, source, weights, outputs, symbolic_width)


def _is_width(width, out_width, stride: int, out_offset: int) -> bool:
    """Whether `width` is symbolic (a variable, or an expression of one: `time * 8` after
    an upsampler) and `out_width` is `stride * width + out_offset` (TVM's analyzer proves
    it). The kernel binds its own width variable to the input's width at run time."""
    from tvm import sym, tirx

    if isinstance(width, int) or isinstance(out_width, int):
        return False
    difference = sym.Analyzer().simplify(out_width - width * stride)
    return isinstance(difference, tirx.IntImm) and int(difference) == out_offset


def _op_name(expr):
    from tvm import relax
    from tvm.ir import Op

    if isinstance(expr, relax.Call) and isinstance(expr.op, Op):
        return expr.op.name
    return None


def _is_swap(expr) -> bool:
    return _op_name(expr) == PERMUTE and expr.attrs.axes is not None and \
        tuple(int(a) for a in expr.attrs.axes) == _SWAP


def _constant(expr):
    import tvm

    if isinstance(expr, tvm.ir.expr.GenericConst) and isinstance(expr.value, tvm.runtime.Tensor):
        return expr.value.numpy()
    return None


def _static(expr):
    """(shape, dtype) of a tensor-typed expression: ints, except a batch dimension that
    may be a symbolic variable and a last (width) dimension that may be a symbolic
    expression (kept as is); (None, None) for anything else."""
    import tvm
    from tvm import relax, tirx

    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None, None
    dims = getattr(ty.shape, "values", None)
    if dims is None or len(dims) < 2 or \
            not all(isinstance(d, tirx.IntImm) for d in dims[1:-1]) or \
            not isinstance(dims[0], (tirx.IntImm, tirx.Var)) or \
            not isinstance(dims[-1], tvm.ir.expr.Expr):
        return None, None
    return tuple(int(d) if isinstance(d, tirx.IntImm) else d for d in dims), str(ty.dtype)


@functools.lru_cache(maxsize=None)
def _rewriter_class():
    # Defined on first use: importing this module must not import TVM.
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        """Re-emits each matched output binding as one call_tir of its kernel."""

        def __init__(self, mod, target, plans):
            super().__init__(mod)
            self.target = target
            self.plan_of = {output: plan for plan in plans.values() for output in plan.outputs}
            self.kernels = {}  # id(plan) -> (kernel GlobalVar, packed filters constant)
            self.replaced = 0

        def visit_var_binding_(self, binding):
            plan = self.plan_of.get(binding.var)
            if plan is None:
                return super().visit_var_binding_(binding)
            call = self._kernel_call(plan, binding.var.ty)
            if isinstance(binding.var, relax.DataflowVar) or \
                    not self.builder_.current_block_is_dataflow():
                new_var = self.builder_.emit(call)
            else:
                new_var = self.builder_.emit_output(call)
            self.set_var_remap(binding.var, new_var)

        def _kernel_call(self, plan, out_ty):
            if id(plan) not in self.kernels:
                # Few output channels may run folded (kernels/folding.py): same input
                # and output, other filters.
                geometry = kernel_geometry(plan.geometry)
                taps = fold_filters(plan.weights.transpose(2, 1, 0), geometry)
                cpu = target_family(self.target) == "cpu"
                described = schedule_cpu.describe_target(self.target) if cpu else None
                if cpu and schedule_cpu_width.applies_phase(plan.geometry, described,
                                                            plan.width is not None):
                    # A strided NCW layer of few channels: vectorized along the width, a
                    # phase at a time (kernels/source_phase_width.py), unfolded, ahead of
                    # any tuning record; for every width in one kernel when the width
                    # is symbolic.
                    func, layout = schedule_cpu_width.build_phase(
                        plan.geometry, self.target, symbolic=plan.width is not None)
                    filters = source_phase_width.pack_filters(
                        plan.weights.transpose(2, 1, 0), layout)
                    schedule = "phase-width" if plan.width is None else \
                        SYMBOLIC_WIDTH + ":phase-width"
                elif plan.width is not None and cpu and schedule_cpu_width.applies(
                        geometry, described, plan.width):
                    # Every width in one kernel, in the width form (its two loop nests:
                    # kernels/source_width.py), as fast as the static one at each width:
                    # kernel ms, static -> symbolic, HiFi-GAN's 37 stride-1 shapes at two
                    # widths each, interleaved in one process, each kernel compiled alone
                    # (tools/cpu/symbolic_width_form.py, Zen 4, 2 vCPUs, 2026-12-06, two
                    # runs): 0.92-1.05x, geometric mean 1.01x and 1.00x (one 1.11x that
                    # re-measured 1.00x); 64 -> 64 K 11 W 6400 2.788 -> 2.831, 32 -> 1 K 7
                    # W 12800 0.145 -> 0.143. The symbolic channel form, same way and
                    # day (busy VM, load ~2.8): 64 -> 64 K 11 W 6400 9.24 ms against
                    # 5.54, K 3 d 3 2.44 / 1.73, 32 -> 32 K 3 W 12800 1.55 / 0.92, K 7 d 5
                    # 3.59 / 1.93, 32 -> 1 K 7 1.70 / 0.155.
                    func, layout = schedule_cpu_width.build(geometry, self.target,
                                                            width=plan.width)
                    filters, schedule = source_width.pack_filters(taps, layout), \
                        SYMBOLIC_WIDTH + ":width"
                elif plan.width is not None and not cpu:
                    # Every width in one CUDA kernel: the plan of the reference width, its
                    # grid an expression of the width (kernels/schedule_cuda.build).
                    func, layout = schedule_cuda.build(geometry, self.target,
                                                       width=plan.width)
                    filters, schedule = pack_filters(np.ascontiguousarray(taps), layout), \
                        SYMBOLIC_WIDTH
                elif plan.width is not None:
                    # Every width in one kernel (kernels/symbolic_width.py): planned at
                    # the reference width, with a nest of its own for the widths that
                    # another plan serves better (kernels/width_variants.py), no tuning
                    # record.
                    func, layout, _ = width_variants.build(plan.geometry, self.target,
                                                           plan.width)
                    filters, schedule = pack_filters(np.ascontiguousarray(taps), layout), \
                        SYMBOLIC_WIDTH
                elif cpu and schedule_cpu_width.applies(geometry, described):
                    # Few channels at stride 1 in NCW: vectorized along the width
                    # (kernels/source_width.py), ahead of any tuning record.
                    func, layout = schedule_cpu_width.build(geometry, self.target)
                    filters, schedule = source_width.pack_filters(taps, layout), "width"
                else:
                    if cpu:
                        # A tuning record for this shape and target when there is one.
                        func, layout, record = records.tuned_kernel(geometry, self.target)
                    else:
                        (func, layout), record = build_kernel(geometry, self.target), None
                    schedule = f"tuned:{record.digest()}" if record else "generic"
                    filters = pack_filters(np.ascontiguousarray(taps), layout)
                func = func.with_attrs({"tirx.is_scheduled": True, "op_pattern": _OPAQUE,
                                        "conv1d_transpose.kernel_version": KERNEL_VERSION,
                                        "conv1d_transpose.schedule": schedule})
                # add_func reuses a structurally equal kernel (same shapes, same schedule).
                gv = self.builder_.add_func(func, "conv1d_transpose_polyphase")
                # relax.const would store a float64 array as float32 unless told the dtype.
                self.kernels[id(plan)] = (gv, relax.const(filters, str(filters.dtype)))
                self.replaced += 1
            gv, filters = self.kernels[id(plan)]
            # The replaced binding's type: the user's layout, and a symbolic batch if any.
            return relax.call_tir(gv, [self.visit_expr(plan.data), filters], out_ty)

    return Rewriter
