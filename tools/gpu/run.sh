#!/bin/bash
# On the GPU machine, from the repository root, after tools/gpu/prepare.sh staged .gpu/:
#   [BENCH=layer,layer] [ONLY=section,...] [ORT_PARTS=dir] bash .gpu/run.sh  (results under $OUT)
OUT=${OUT:-/tmp/gpu-out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl || exit 1
tar -xJf .gpu/tvm-runtime.tar.xz -C /tmp/site || exit 1
# onnxruntime-gpu, carried in parts by earlier calls (tools/gpu/stage_onnxruntime_gpu.sh);
# it shadows the machine's CPU-only onnxruntime.
if [ -n "$ORT_PARTS" ]; then cat $ORT_PARTS/part* | xz -d | tar -x -C /tmp/site || exit 1; fi
export PYTHONPATH=/tmp/site TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1 COLUMNS=150
export PATH=/usr/local/cuda/bin:$PATH
libs=$(python3 -c "import glob,site;print(':'.join(glob.glob(site.getsitepackages()[0]+'/nvidia/*/lib')+glob.glob(site.getsitepackages()[0]+'/nvidia/*/*/lib')))")
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libs:$LD_LIBRARY_PATH
echo "nvcc: $(which nvcc)"; ls /usr/local/cuda/lib64/libcudart.so* 2>&1 | head -3
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
timeout ${CHECK_S:-300} python3 .gpu/check.py 2>&1 | tee $OUT/check.log | grep -v "^[a-z0-9-]*__r"
if [ -n "$BENCH" ]; then
timeout ${BENCH_S:-200} /tmp/site/bin/conv1d-transpose bench --targets cuda-sm90 \
  --backends tvm:cuda-sm90,torch:cuda,onnxruntime:cuda,onnxruntime,torch --cache-dir .gpu/cache \
  --only $BENCH --rounds 5 --json $OUT/bench-cuda.json 2>&1 | tee $OUT/bench-cuda.txt
fi
