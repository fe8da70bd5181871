#!/usr/bin/env bash
# On a CUDA 13 GPU machine with no network (the project's device runs): Jittor from the carried wheels
# (bench/device_setup.sh), then time the SD 2.1 UNet step (ours, fp32 + fp16) and diffusers' (fp16 + fp32) in
# separate processes. Results: one JSON line each, in ${OUT:-.}/unet_step.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-.}
source bench/device_setup.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/torchside .whl/torchside/*.whl || exit 1
for dtype in float32 float16; do
  python3 bench/unet_step.py --impl jittor --dtype $dtype "$@" | tail -n 1 | tee -a "$OUTDIR/unet_step.jsonl"
  PYTHONPATH=/tmp/torchside:$PWD python3 bench/unet_step.py --impl diffusers --dtype $dtype "$@" \
    | tail -n 1 | tee -a "$OUTDIR/unet_step.jsonl"
done
