#!/usr/bin/env bash
# The fused GroupNorm on one GPU (the project's device runs), then the float16/float32 and staged-backward job
# (bench/device_precision.sh), all in the background across calls on one machine:
#
#   bash bench/device_group_norm.sh SECONDS   # start (first call) or wait for (later calls) the job
#
# Before/after pairs come from processes of the same machine, the fused norm switched by
# STYLEBLEND_FUSED_GROUPNORM (the JSON lines say which): bench/group_norm.py (errors and ms per norm), the UNet
# step (float16: on, off, on again; float32: off, on) beside diffusers' on the same card, one float16 training
# and one float16 StyleBlend image with the norm off (their "on" runs are the precision job's).
# Carried: .whl/ (see bench/device_setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh

if [ "${1:-}" = --now ]; then
  python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
  python3 bench/group_norm.py | tee /tmp/group_norm_rows.jsonl
  if ! grep -q fused_grad_ms /tmp/group_norm_rows.jsonl; then  # the kernels failed: measure the rest without them
    echo '{"fused_group_norm_failed": true}'; export STYLEBLEND_FUSED_GROUPNORM=0
  fi
  unet() { STYLEBLEND_FUSED_GROUPNORM=$1 python3 bench/unet_step.py --impl jittor --dtype $2 | tail -n 1; }
  unet 1 float16; unet 0 float16; unet 1 float16; unet 0 float32; unet 1 float32
  python3 -m pip install -q --no-index --no-deps --target /tmp/torchside .whl/torchside/*.whl &&
    for dtype in float16 float32; do
      PYTHONPATH=/tmp/torchside:$PWD python3 bench/unet_step.py --impl diffusers --dtype $dtype | tail -n 1
    done
  STYLEBLEND_FUSED_GROUPNORM=0 python3 bench/train_step.py --dtype float16 --steps 3 | grep '^{'
  STYLEBLEND_FUSED_GROUPNORM=0 python3 bench/styleblend_image.py --dtype float16 | grep '^{'
  bash bench/device_precision.sh --now
  exit
fi

source bench/device_background.sh
background group_norm "${1:?usage: bench/device_group_norm.sh SECONDS}" bash bench/device_group_norm.sh --now
