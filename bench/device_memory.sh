#!/usr/bin/env bash
# One training at a time on one GPU (the project's device runs), in the background across calls: textual inversion
# under Jittor's profiler (its 14 costliest ops), then the UNet LoRA alone with the staged and the plain backward
# (the peak memory of one training, not of the process's three).
#
#   bash bench/device_memory.sh SECONDS   # start (first call) or wait for (later calls) the job
#
# Carried: .whl/ (see bench/device_setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh

if [ "${1:-}" = --now ]; then
  python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
  python3 bench/train_step.py --dtype float32 --steps 3 --profile 14 --only textual_inversion | grep '^{'
  python3 bench/train_step.py --dtype float32 --steps 3 --staged --only unet_lora | grep '^{'
  python3 bench/train_step.py --dtype float32 --steps 3 --only unet_lora | grep '^{'
  exit
fi

source bench/device_background.sh
background memory "${1:?usage: bench/device_memory.sh SECONDS}" bash bench/device_memory.sh --now
