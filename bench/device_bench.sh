#!/usr/bin/env bash
# bench/run.sh on a CUDA 13 GPU machine with no network (the project's device runs), in the background across
# calls (each call at most 10 minutes): Jittor from the carried wheels (bench/device_setup.sh), diffusers from
# .whl/torchside/ beside the machine's own PyTorch and transformers.
#
#   bash bench/device_bench.sh SECONDS     # start (first call) or wait for (later calls) the run
#
# Brings back bench.jsonl (the JSON lines and the table), bench.log and the GPU's use sampled every 5 s.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_setup.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/torchside .whl/torchside/*.whl || exit 1
source bench/device_background.sh
background bench "${1:?usage: bench/device_bench.sh SECONDS}" env JITTOR_PYTHON=python3 \
  TORCH_PYTHON="env PYTHONPATH=/tmp/torchside:$PWD python3" bash bench/run.sh /tmp/bench-results.jsonl
