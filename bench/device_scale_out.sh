#!/usr/bin/env bash
# Scale-out on one machine with several GPUs (the project's nvidia-h100-x2 / -x4 device runs), one call per recipe:
#
#   bash bench/device_scale_out.sh smoke     # tiny model, smoke recipe
#   bash bench/device_scale_out.sh reduced   # SD 2.1 architecture (random weights), bench/recipes/scale_out.yaml
#
# Carried: .whl/ (see bench/device_setup.sh) and .device/B/<style>/ for at least as many styles as GPUs. Runs
# bench/scale_out.py (one style warm-up, N styles on GPU 0, then make -jN on all N GPUs) and appends its JSON line
# to $OUT/scale_out.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh
n=$(nvidia-smi -L | wc -l)
gpus=$(seq -s, 0 $((n - 1)))
styles=$(ls .device/B | head -n "$n")
case ${1:?usage: bench/device_scale_out.sh smoke|reduced} in
  smoke) args=() ;;
  reduced) python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
           args=(--model /tmp/sd21-random --recipe bench/recipes/scale_out.yaml) ;;
  *) echo "unknown recipe $1 (smoke or reduced)" >&2; exit 2 ;;
esac
python3 bench/scale_out.py --data .device/B --styles $styles --gpus "$gpus" --warmup --work "/tmp/scale_out_$1" \
  "${args[@]}" | tee -a "${OUT:-.}/scale_out.jsonl"
