"""Fill an artifact cache here (no GPU needed) with the cuda-sm90 builds of suite layers, as
Conv1DTranspose(target='cuda-sm90') would look them up on the GPU machine."""
import sys, time
from conv1d_transpose.op import Conv1DTranspose
from conv1d_transpose.compile.artifact import compile_model
from conv1d_transpose.compile.artifact import ModelSource
from conv1d_transpose.workloads import load_workloads

cache, names = sys.argv[1], sys.argv[2].split(",")
for w in load_workloads():
    if w.name not in names:
        continue
    for dtype in ("float32", "float16") if w.name == "stream-chunk" else ("float32",):
        spec = w.spec(dtype)
        x, f = w.arrays(dtype)
        op = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                             spec.dilation, backend="onnxruntime")
        t0 = time.time()
        art = compile_model(ModelSource(op.to_onnx, op._recipe, op.spec), "cuda-sm90", cache_dir=cache)
        print(w.name, dtype, art.path, round(time.time() - t0, 1), flush=True)
