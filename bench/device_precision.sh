#!/usr/bin/env bash
# Float16 against float32, and the staged backward, on one GPU (the project's device runs), in the background
# across calls:
#
#   bash bench/device_precision.sh SECONDS   # start (first call) or wait for (later calls) the job
#
# The job, all on one machine: the three training steps (bench/train_step.py) and one full StyleBlend image
# (bench/styleblend_image.py), each with --dtype float16 (the recipe's `precision: float16`) and float32; after
# the timed steps, one more step of each training under Jittor's profiler lists its 14 costliest fused ops; then
# the training steps again with --staged (the recipe's `staged_backward: true`), in a process of their own so that
# their peak memory is theirs.
# Carried: .whl/ (see bench/device_setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh

if [ "${1:-}" = --now ]; then
  python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
  for dtype in float16 float32; do
    python3 bench/train_step.py --model /tmp/sd21-random --dtype $dtype --steps 3 --profile 14 | grep '^{'
    python3 bench/train_step.py --model /tmp/sd21-random --dtype $dtype --steps 3 --staged | grep '^{'
    python3 bench/styleblend_image.py --model /tmp/sd21-random --dtype $dtype | grep '^{'
  done
  exit
fi

source bench/device_background.sh
background precision "${1:?usage: bench/device_precision.sh SECONDS}" bash bench/device_precision.sh --now
