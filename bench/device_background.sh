# Sourced by the bench/device_*.sh scripts: run a job in its own process session so it outlives the device call
# (each call at most 10 minutes), and on every call wait for it up to a deadline and bring back what it wrote.
#
#   background NAME SECONDS COMMAND...
#
# The first call on a machine starts COMMAND (stdout -> /tmp/NAME.jsonl, stderr -> /tmp/NAME.log) with the
# GPUs' use sampled every 5 s (/tmp/NAME.gpu.csv); every call waits until the calling script has run SECONDS
# (set-up included), copies the files to ${OUT:-.device/out} and says "finished" or "still running".
background() {
  local name=$1 wait=$2 out=${OUT:-.device/out}
  shift 2
  mkdir -p "$out"
  if [ ! -e "/tmp/$name.pid" ]; then
    nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "/tmp/$name.gpus.txt"
    setsid nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv -l 5 \
      > "/tmp/$name.gpu.csv" &
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "/tmp/$name.pid" "$@" > "/tmp/$name.jsonl" 2> "/tmp/$name.log" &
    sleep 2
  fi
  while kill -0 "$(cat "/tmp/$name.pid")" 2>/dev/null && [ "$SECONDS" -lt "$wait" ]; do sleep 5; done
  cp "/tmp/$name".{jsonl,log,gpu.csv,gpus.txt} "$out"/
  tail -n 20 "/tmp/$name.log"
  cat "/tmp/$name.jsonl"
  kill -0 "$(cat "/tmp/$name.pid")" 2>/dev/null && echo "still running" || echo "finished"
}
