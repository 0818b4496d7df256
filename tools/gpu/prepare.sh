#!/bin/bash
# Here, on the build machine (no GPU needed): stage into .gpu/ what run.sh needs on a GPU
# machine that has Python, numpy, onnx, onnxruntime and (for the peer) torch, but no TVM:
# apache-tvm-ffi for its Python, TVM's runtime libraries, this package as a wheel, kernel
# variants of the suite and of docs/outside-suite.yaml, a cache of cuda-sm90 artifacts of
# the suite's layers, and TVM's own CUDA build of two layers. docs/design/cuda.md says more.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STAGE=.gpu
rm -rf $STAGE && mkdir -p $STAGE
cp tools/gpu/check.py tools/gpu/run.sh docs/outside-suite.yaml $STAGE/
$PY -m pip download -q --no-deps --only-binary=:all: --implementation cp \
    --python-version "${GPU_PYTHON:-3.12}" --platform manylinux_2_28_x86_64 -d $STAGE \
    "apache-tvm-ffi==$($PY -c 'import importlib.metadata as m; print(m.version("apache-tvm-ffi"))')"
site=$($PY -c "import os, tvm; print(os.path.dirname(os.path.dirname(tvm.__file__)))")
# The runtime alone: no compiler library (260 MB), headers or sources.
tar -C "$site" --exclude=tvm/lib/libtvm_compiler.so --exclude=tvm/3rdparty --exclude=tvm/include \
    --exclude=tvm/src --exclude=tvm/web --exclude=__pycache__ \
    -cJf $STAGE/tvm-runtime.tar.xz tvm $(cd "$site" && ls -d apache_tvm-*.dist-info)
$PY -m pip wheel -q --no-deps --no-build-isolation -w $STAGE .
# The rule's plan and the 15 shared-memory plans of the H200 sweep (docs/design/cuda.md); set
# SHARED= (empty) for the register-tile grid of ROWS x THREADS instead.
export SHARED="${SHARED-rule;4,16,8,4,16;4,16,16,4,16;8,16,16,4,8;4,32,8,4,16;8,16,8,4,16;4,8,16,4,16;2,16,16,2,16;4,16,8,4,32;8,16,8,8,8;4,32,4,4,16;8,8,16,4,16;8,32,8,4,8;8,16,16,4,16;2,16,8,2,16;2,32,4,2,16}"
ROWS=1,2,4,8,16 THREADS=32,64,128,256 $PY tools/gpu/build_variants.py $STAGE/variants > /dev/null
WORKLOADS=docs/outside-suite.yaml ROWS=1,2,4,8 THREADS=32,64 \
    $PY tools/gpu/build_variants.py $STAGE/variants-outside > /dev/null
$PY tools/gpu/make_cache.py $STAGE/cache \
    hifigan-up1,hifigan-up2,hifigan-up3,hifigan-up4,stream-chunk,batch8-up2,ncw-up2,dilated
$PY tools/gpu/build_default.py $STAGE/default hifigan-up4,stream-chunk
du -sh $STAGE
