#!/usr/bin/env bash
# On a CUDA 13 GPU machine with no network (the project's device runs): install Jittor from the carried wheels
# into its own folder, apply `styleblend.gpu_setup`, then time the SD 2.1 UNet step (ours, fp32 + fp16) and
# diffusers' (fp16 + fp32) in separate processes. Results: one JSON line each, in ${OUT:-.}/unet_step.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-.}
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/jt .whl/*.whl .whl/jittor-*.tar.gz || exit 1
python3 -m pip install -q --no-index --no-deps --target /tmp/torchside .whl/torchside/*.whl || exit 1
PYTHONPATH=/tmp/jt:$PWD python3 -m styleblend.gpu_setup
for dtype in float32 float16; do
  STYLEBLEND_DEVICE=cuda PYTHONPATH=/tmp/jt:$PWD python3 bench/unet_step.py --impl jittor --dtype $dtype "$@" \
    | tail -n 1 | tee -a "$OUTDIR/unet_step.jsonl"
  PYTHONPATH=/tmp/torchside:$PWD python3 bench/unet_step.py --impl diffusers --dtype $dtype "$@" \
    | tail -n 1 | tee -a "$OUTDIR/unet_step.jsonl"
done
