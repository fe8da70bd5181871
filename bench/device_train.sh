#!/usr/bin/env bash
# Training-side levers on one GPU (the project's device runs), in the background across calls:
#
#   bash bench/device_train.sh SECONDS      # start (first call) or wait for (later calls) the job
#
# The job: the attention gradients (bench/attention.py --backward: errors and ms, float32 and float16); the three
# training steps (bench/train_step.py, float32) through the naive attention, the fused one
# (STYLEBLEND_FUSED_BACKWARD=1) and the naive one again (the first process on a fresh machine reads slow); then
# `make reproduce` of one style with the reduced recipe (bench/recipes/scale_out.yaml), whose report goes to the
# log. Carried: .whl/ and .device/B/<style>/.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh

if [ "${1:-}" = --now ]; then
  python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
  python3 bench/attention.py --backward --dtypes float32 float16 | grep '^{'
  for fused in 0 1 0; do
    STYLEBLEND_FUSED_BACKWARD=$fused python3 bench/train_step.py --model /tmp/sd21-random --dtype float32 --steps 3 \
      | grep '^{'
  done
  style=$(ls .device/B | head -n 1)
  make reproduce PY=python3 SET=B DATA=.device/B STYLES="$style" MODEL=/tmp/sd21-random \
    RECIPE=bench/recipes/scale_out.yaml OUTPUTS=/tmp/probe/outputs RESULTS=/tmp/probe/result \
    CHECKPOINTS=/tmp/probe/checkpoints >&2
  cat /tmp/probe/outputs/report.csv >&2
  exit
fi

source bench/device_background.sh
background train "${1:?usage: bench/device_train.sh SECONDS}" bash bench/device_train.sh --now
