#!/usr/bin/env bash
# bench/notebook_repeat.py on one GPU (the project's device runs), in the background across calls: B style 00's
# notebooks up to 02_coarse_style with the reduced real-size recipe, then 02_coarse_style again and again, to catch
# the intermittent Jittor crash seen there (docs/performance.md, scale-out).
#
#   bash bench/device_notebook_repeat.sh SECONDS [RUNS [EAGER_EVERY]]   # start (first call) or wait for the job
#
# Carried: .whl/ (see bench/device_setup.sh) and .device/B/00/.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh

if [ "${1:-}" = --now ]; then
  python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
  exec python3 bench/notebook_repeat.py --data .device/B --style 00 --model /tmp/sd21-random \
    --recipe bench/recipes/scale_out.yaml --notebook 02_coarse_style --runs "${2:-8}" --eager-every "${3:-2}" \
    --logs /tmp/notebook_repeat_logs
fi

source bench/device_background.sh
background notebook_repeat "${1:?usage: bench/device_notebook_repeat.sh SECONDS [RUNS [EAGER_EVERY]]}" \
  bash bench/device_notebook_repeat.sh --now "${@:2}"   # RUNS and EAGER_EVERY as given; --now fills in defaults
cp /tmp/notebook_repeat_logs/*.log "${OUT:-.device/out}/" 2>/dev/null
true
