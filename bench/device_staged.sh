#!/usr/bin/env bash
# The staged backward and the fused GroupNorm on one GPU (the project's device runs), most wanted numbers first,
# in the background across calls on one machine (a machine is held at most 30 minutes, set-up included):
#
#   bash bench/device_staged.sh SECONDS   # start (first call) or wait for (later calls) the job
#
# Training steps at 768² in float32 with the staged backward, then plain (peak memory and ms per step, one process
# each); the float16 UNet step with the fused GroupNorm on, off and on again (STYLEBLEND_FUSED_GROUPNORM; the first
# process on a machine reads slow); the float16 training with the staged backward; one float16 StyleBlend image.
# Carried: .whl/ (see bench/device_setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh

if [ "${1:-}" = --now ]; then
  python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
  python3 bench/train_step.py --dtype float32 --steps 3 --staged | grep '^{'
  python3 bench/train_step.py --dtype float32 --steps 3 | grep '^{'
  for gn in 1 0 1; do
    STYLEBLEND_FUSED_GROUPNORM=$gn python3 bench/unet_step.py --impl jittor --dtype float16 | tail -n 1
  done
  python3 bench/train_step.py --dtype float16 --steps 3 --staged | grep '^{'
  python3 bench/styleblend_image.py --dtype float16 | grep '^{'
  exit
fi

source bench/device_background.sh
background staged "${1:?usage: bench/device_staged.sh SECONDS}" bash bench/device_staged.sh --now
