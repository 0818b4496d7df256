#!/bin/bash
# Here, on the build machine: stage onnxruntime-gpu for the lent GPU machine, which has no
# package index and takes at most 64 MiB a call. The wheel is 256 MB (its CUDA provider
# library alone 284 MB unpacked), so this keeps only what the CUDA provider needs to run
# a model from Python, packs it with xz and splits it into parts of PART (58M) for
# separate calls, under .ort/ (ignored: add /.ort/ to .git/info/exclude):
#   call k:  carry [.ort/partNN]:  mkdir -p /tmp/ortparts && cp .ort/part* /tmp/ortparts/
#   then:    ORT_PARTS=/tmp/ortparts bash .gpu/run.sh   (the machine must stay warm between)
# docs/design/cuda.md says more.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
VERSION=${ORT_VERSION:-1.31.1}  # CUDA 13 and cuDNN 9, as the GPU machine's torch has
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PY -m pip download -q --no-deps --only-binary=:all: --implementation cp \
    --python-version "${GPU_PYTHON:-3.12}" --platform manylinux_2_28_x86_64 -d "$work" \
    "onnxruntime-gpu==$VERSION"
(cd "$work" && unzip -q onnxruntime_gpu-*.whl 'onnxruntime/*' -x 'onnxruntime/transformers/*' \
    'onnxruntime/quantization/*' 'onnxruntime/datasets/*' \
    'onnxruntime/capi/libonnxruntime_providers_tensorrt.so' 'onnxruntime/capi/libonnxruntime.so*')
rm -rf .ort && mkdir -p .ort
tar -C "$work" -cf - onnxruntime | xz -T0 -3 | split -b "${PART:-58M}" -d - .ort/part
ls -la .ort
