# Sourced by the bench/device_*.sh scripts on a CUDA 13 GPU machine with no network (the project's device runs):
# installs the carried wheels (.whl/: the Jittor sdist, numpy<2; .whl/nb/: papermill, nbclient, ipykernel and
# their dependencies) into /tmp/jt once per machine, applies styleblend.gpu_setup, compiles Jittor's core, and
# exports the environment every later command needs (JUPYTER_PATH: a kernel that reports its end).
export PYTHONPATH=/tmp/jt:$PWD STYLEBLEND_DEVICE=cuda STYLEBLEND_QUIET=1 PYTHONUNBUFFERED=1
if [ ! -e /tmp/jt/.ready ]; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/jt \
    .whl/*.whl .whl/jittor-*.tar.gz .whl/nb/*.whl || exit 1
  # its report (the patches it applied) goes to a file: a short reply is read sooner, and a device machine stays
  # warm for only 30 s after a call
  python3 -m styleblend.gpu_setup > /tmp/gpu_setup.log || { cat /tmp/gpu_setup.log; exit 1; }
  tail -n 1 /tmp/gpu_setup.log
  python3 -c "import styleblend.backend" >/dev/null || exit 1   # Jittor's core compile (minutes)
  touch /tmp/jt/.ready
fi
# the python3 kernel that papermill starts says how it ended (bench/kernel_exit.py): the hunt for the kernel deaths
[ -e /tmp/kernel_exit/kernels/python3/kernel.json ] || python3 bench/kernel_exit.py install /tmp/kernel_exit >/dev/null
export JUPYTER_PATH=/tmp/kernel_exit
