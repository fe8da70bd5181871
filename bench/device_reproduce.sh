#!/usr/bin/env bash
# `make reproduce` at full size for one B style on a CUDA 13 GPU machine with no network (the project's device
# runs, each call at most 10 minutes). Carried: .whl/ (Jittor sdist, numpy<2, .whl/nb/ = papermill, nbclient,
# ipykernel and their dependencies) and .device/B/<style>/ (the style's images and prompt.json).
#
#   bash bench/device_reproduce.sh SECONDS
#
# The first call on a machine installs Jittor and the notebook packages into /tmp/jt, applies styleblend.gpu_setup,
# writes the SD 2.1-architecture model with random weights (styleblend write-random) and starts `make reproduce`
# in its own process session, so the run goes on between calls. Every call then waits up to SECONDS for it and
# packs the state (report, executed notebooks, figures, checkpoints, log) into $OUT/state.tgz.part-* (15 MiB
# pieces). On a fresh machine, carried .device/state.tgz.part-* are unpacked first, and the run resumes where it stopped (finished notebooks skip).
set -uo pipefail
cd "$(dirname "$0")/.."
WAIT=${1:?usage: bench/device_reproduce.sh SECONDS}
STYLE=${STYLE:-05}
MODEL=${MODEL:-/tmp/sd21-random}
OUTDIR=${OUT:-.device/out}
LOG=/tmp/reproduce.log
mkdir -p "$OUTDIR"
start=$SECONDS
source bench/device_setup.sh
if [ ! -e /tmp/reproduce.setup ]; then
  python3 -m styleblend.cli write-random "$MODEL" || exit 1
  if ls .device/state.tgz.part-* >/dev/null 2>&1; then cat .device/state.tgz.part-* | tar xz && echo "resumed"; fi
  touch /tmp/reproduce.setup
  echo "set up in $((SECONDS - start)) s"
fi

if [ ! -e /tmp/reproduce.pid ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
  setsid bash -c "echo \$\$ > /tmp/reproduce.pid; make reproduce PY=python3 SET=B DATA=.device/B \
    STYLES=$STYLE MODEL=$MODEL > $LOG 2>&1; echo \$? > /tmp/reproduce.rc" &
  sleep 2
fi

while kill -0 "$(cat /tmp/reproduce.pid)" 2>/dev/null && [ $((SECONDS - start)) -lt "$WAIT" ]; do sleep 5; done
cp $LOG "$OUTDIR/reproduce.log"
rm -f "$OUTDIR"/state.tgz.part-*
tar cz --exclude='*/sdedit' outputs checkpoints/B 2>/dev/null | split -b 15m - "$OUTDIR/state.tgz.part-"
ls -la "$OUTDIR"
tail -n 25 $LOG
[ -f /tmp/reproduce.rc ] && echo "make reproduce finished: exit $(cat /tmp/reproduce.rc)" || echo "still running"
