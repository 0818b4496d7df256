"""Fill an artifact cache here (no GPU needed) with the cuda-sm90 builds of suite layers, as
Conv1DTranspose(target='cuda-sm90') would look them up on the GPU machine."""
import json, os, sys, time
from conv1d_transpose.op import Conv1DTranspose
from conv1d_transpose.compile.artifact import compile_model
from conv1d_transpose.compile.model_source import ModelSource
from conv1d_transpose.workloads import load_workloads

# Besides float32: the dtypes the GPU check also runs (check.py op_api reads built.json).
OTHER_DTYPES = {"stream-chunk": ("float16",), "hifigan-up3": ("float16",), "hifigan-up4": ("float16",)}
cache, names = sys.argv[1], sys.argv[2].split(",")
built = []
for w in load_workloads():
    if w.name not in names:
        continue
    for dtype in ("float32", *OTHER_DTYPES.get(w.name, ())):
        spec = w.spec(dtype)
        x, f = w.arrays(dtype)
        op = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                             spec.dilation, backend="onnxruntime")
        t0 = time.time()
        art = compile_model(ModelSource(op.to_onnx, op._recipe, op.spec), "cuda-sm90", cache_dir=cache)
        print(w.name, dtype, art.path, round(time.time() - t0, 1), flush=True)
        built.append([w.name, dtype])
with open(os.path.join(cache, "built.json"), "w") as f:
    json.dump(built, f)
