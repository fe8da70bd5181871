#!/usr/bin/env bash
# Every GPU benchmark of docs/performance.md on this machine, one process each, then the table (bench/report.py):
# the UNet step, one StyleBlend image and the three trainings' steps, ours and diffusers', float16 and float32;
# an SDEdit candidate (minutes of one style); textual inversion on the whole token table (what training its one
# row saves); Jittor's memory profile of an image and of the trainings.
#
#   bash bench/run.sh [RESULTS.jsonl]          # make bench; after make gpu-setup
#
# JITTOR_PYTHON / TORCH_PYTHON: the commands that run the Jittor side and the PyTorch side (default python3 both;
# they differ where Jittor needs numpy<2 and PyTorch numpy 2). MODEL: the random SD 2.1 folder (written if absent).
set -uo pipefail
results=$(realpath -m "${1:-bench-results.jsonl}")
cd "$(dirname "$0")/.."
jittor=(${JITTOR_PYTHON:-python3}) torch=(${TORCH_PYTHON:-python3})
model=${MODEL:-/tmp/sd21-random}
export STYLEBLEND_DEVICE=cuda
if [ -e "$results" ]; then echo "bench/run.sh: $results exists; not overwriting it (name another file)" >&2; exit 2; fi
"${jittor[@]}" -m styleblend write-random "$model" >/dev/null || exit 1

step() {   # one benchmark process: its last line (the JSON) goes to the results, its log to the terminal
  local side=$1; shift
  local -n cmd=$side
  "${cmd[@]}" "$@" | tail -n 1 | tee -a "$results"
}
# The first Jittor process on a machine runs slow throughout, not only while it compiles (measured on an H200: UNet
# step float16 499 ms in the first process, 69 and 77 ms in later ones): one untimed process goes first.
"${jittor[@]}" bench/unet_step.py --impl jittor --dtype float16 --steps 1 >/dev/null 2>&1
for dtype in float16 float32; do
  step jittor bench/unet_step.py --impl jittor --dtype $dtype
  step torch bench/unet_step.py --impl diffusers --dtype $dtype
done
step jittor bench/styleblend_image.py --model "$model" --dtype float16 --sdedit
step torch bench/styleblend_image.py --impl diffusers --model "$model" --dtype float16
step jittor bench/styleblend_image.py --model "$model" --dtype float32
step torch bench/styleblend_image.py --impl diffusers --model "$model" --dtype float32
for dtype in float32 float16; do
  step jittor bench/train_step.py --model "$model" --dtype $dtype
  step torch bench/train_step.py --impl diffusers --dtype $dtype
done
step jittor bench/train_step.py --model "$model" --dtype float32 --only textual_inversion_table
step jittor bench/styleblend_image.py --model "$model" --dtype float16 --memory --images 1
step jittor bench/train_step.py --model "$model" --dtype float32 --memory --steps 1
# Jittor's allocator flags (read once, when Jittor starts: one process each) and jt.gc(): what each does to the
# image's nvidia-smi peak, against the default run above
for flags in use_sfrl_allocator=0 use_temp_allocator=0 sfrl_large_block_size_device=1048576; do
  step jittor bench/styleblend_image.py --model "$model" --dtype float16 --allocator "$flags"
done
step jittor bench/styleblend_image.py --model "$model" --dtype float16 --gc
"${jittor[@]}" bench/report.py "$results"
