#!/usr/bin/env bash
# Every GPU benchmark of docs/performance.md on this machine, one process each, then the table (bench/report.py):
# the UNet step and one StyleBlend image, ours and diffusers', float16 and float32; the three trainings' steps and
# an SDEdit candidate (minutes of one style); textual inversion on the whole token table (what training its one
# row saves); Jittor's memory profile of an image and of the trainings.
#
#   bash bench/run.sh [RESULTS.jsonl]          # make bench; after make gpu-setup
#
# JITTOR_PYTHON / TORCH_PYTHON: the commands that run the Jittor side and the PyTorch side (default python3 both;
# they differ where Jittor needs numpy<2 and PyTorch numpy 2). MODEL: the random SD 2.1 folder (written if absent).
set -uo pipefail
cd "$(dirname "$0")"
results=$(realpath -m "${1:-bench-results.jsonl}")
jittor=(${JITTOR_PYTHON:-python3}) torch=(${TORCH_PYTHON:-python3})
model=${MODEL:-/tmp/sd21-random}
export STYLEBLEND_DEVICE=cuda
if [ -e "$results" ]; then echo "bench/run.sh: $results exists; not overwriting it (name another file)" >&2; exit 2; fi
(cd .. && "${jittor[@]}" -m styleblend.cli write-random "$model" >/dev/null) || exit 1

step() {   # one benchmark process: its last line (the JSON) goes to the results, its log to the terminal
  local side=$1; shift
  local -n cmd=$side
  "${cmd[@]}" "$@" | tail -n 1 | tee -a "$results"
}
for dtype in float16 float32; do
  step jittor unet_step.py --impl jittor --dtype $dtype
  step torch unet_step.py --impl diffusers --dtype $dtype
done
step jittor styleblend_image.py --model "$model" --dtype float16 --sdedit
step torch styleblend_image.py --impl diffusers --model "$model" --dtype float16
step jittor styleblend_image.py --model "$model" --dtype float32
step torch styleblend_image.py --impl diffusers --model "$model" --dtype float32
step jittor train_step.py --model "$model" --dtype float32
step jittor train_step.py --model "$model" --dtype float32 --only textual_inversion_table
step jittor styleblend_image.py --model "$model" --dtype float16 --memory --images 1
step jittor train_step.py --model "$model" --dtype float32 --memory --steps 1
(cd .. && "${jittor[@]}" bench/report.py "$results")
