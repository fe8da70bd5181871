#!/usr/bin/env bash
# Scale-out on one machine with several GPUs (the project's nvidia-h100-x2 / -x4 device runs; each call at most
# 10 minutes, so the runs go on in the background between calls):
#
#   bash bench/device_scale_out.sh SECONDS smoke reduced   # start (first call) or wait for (later calls) the runs
#
# smoke = tiny model, smoke recipe; reduced = SD 2.1 architecture (random weights), bench/recipes/scale_out_half.yaml,
# 3 prompts a style.
# Carried: .whl/ (see bench/device_setup.sh) and .device/B/<style>/ for at least as many styles as GPUs. Each
# recipe runs bench/scale_out.py (one style warm-up, N styles on GPU 0, then make -jN on all N GPUs) and appends
# its JSON line to scale_out.jsonl; bench/device_background.sh keeps the runs going between calls and brings back
# the JSON lines, the log and the GPUs' use sampled every 5 s (scale_out.gpu.csv: which GPU worked when).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh

if [ "${1:-}" = --now ]; then   # one recipe, in the foreground (the background job calls this)
  n=$(nvidia-smi -L | wc -l)
  styles=$(ls .device/B | head -n "$n")
  case ${2:?recipe} in
    smoke) args=() ;;
    reduced) python3 -m styleblend.cli write-random /tmp/sd21-random >/dev/null || exit 1
             args=(--model /tmp/sd21-random --recipe bench/recipes/scale_out_half.yaml --prompts 3) ;;
    *) echo "unknown recipe $2 (smoke or reduced)" >&2; exit 2 ;;
  esac
  exec python3 bench/scale_out.py --data .device/B --styles $styles --gpus "$(seq -s, 0 $((n - 1)))" --warmup \
    --work "/tmp/scale_out_$2" "${args[@]}"
fi

source bench/device_background.sh
background scale_out "${1:?usage: bench/device_scale_out.sh SECONDS smoke|reduced ...}" \
  bash -c 'for r in "$@"; do bash bench/device_scale_out.sh --now "$r" || exit 1; done' recipes "${@:2}"
# a failed notebook's papermill log (kernel stderr included), kept by the runner beside it; copied flat, named
# by its path (scale_out_reduced_serial_outputs_notebooks_00_02_coarse_style.log): files in $OUT come back only
# from at most two folders down
find /tmp/scale_out_* -path '*/outputs/notebooks/*' -name '*.log' 2>/dev/null | while read -r log; do
  name=${log#/tmp/}
  cp "$log" "${OUT:-.device/out}/${name//\//_}"
done
