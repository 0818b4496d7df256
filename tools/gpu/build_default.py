"""TVM's own CUDA build of a suite layer (importer + legalize, no polyphase lowering; the
dlight GPU rules schedule the zero-insertion conv), for the device check's comparison."""
import os, sys, tempfile
import tvm
from tvm import relax
from conv1d_transpose.op import Conv1DTranspose
from conv1d_transpose.compile.importer import import_onnx
from conv1d_transpose.compile import build as B
from conv1d_transpose.workloads import find_workload

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name in sys.argv[2].split(","):
    w = find_workload(name)
    spec = w.spec(); x, f = w.arrays()
    op = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                         spec.dilation, backend="onnxruntime")
    mod = import_onnx(op.to_onnx())
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host={"kind": "llvm"})
    ex = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
    mods = list(ex.mod._collect_from_import_tree(lambda m: m.kind == "cuda"))
    sources = [m.inspect_source("cuda") for m in mods]
    fatbins = [B.compile_fatbin(s, "sm_90") for s in sources]
    with tempfile.TemporaryDirectory() as work:
        ex.export_library(os.path.join(out, name + ".so"), workspace_dir=work,
                          fpack_imports=B._packer(dict(zip(sources, fatbins))))
    print(name, "ok", flush=True)
