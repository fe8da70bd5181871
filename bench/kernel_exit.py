"""A Jupyter kernel that says how it ended (the device runs' hunt for the kernel deaths in docs/performance.md).

papermill reports a vanished kernel as ``DeadKernelError`` and nothing more. Installed as the ``python3`` kernel
(``python bench/kernel_exit.py install FOLDER``, then ``JUPYTER_PATH=FOLDER``), this script runs ipykernel as its
child, passes on the signals Jupyter sends, and when the child ends writes one line to stderr, which papermill keeps
in the notebook's log: the exit status or the signal, and the memory cgroup's OOM-kill count. A SIGKILL with a
grown count means the out-of-memory killer; a plain exit status means the process ended itself.

    python bench/kernel_exit.py install /tmp/kernel_exit     # writes FOLDER/kernels/python3/kernel.json
    python bench/kernel_exit.py -f CONNECTION_FILE ...       # what Jupyter runs (arguments go on to ipykernel)
"""
from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
from pathlib import Path

# files holding "oom_kill N" among their lines: cgroup v2, then v1
OOM_COUNTS = (Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control"))
PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
PR_SET_PDEATHSIG = 1


def oom_kills() -> str:
    """The memory cgroup's ``oom_kill`` count, or that no such file could be read."""
    for path in OOM_COUNTS:
        try:
            counts = dict(line.split()[:2] for line in path.read_text().splitlines() if line.strip())
        except (OSError, ValueError):
            continue
        return f"oom_kill {counts.get('oom_kill', '?')} ({path})"
    return "no cgroup OOM-kill count readable"


def how_it_ended(code: int) -> str:
    return f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit status {code}"


def _die_with_parent() -> None:
    """Linux: the kernel is killed when this wrapper is (Jupyter may SIGKILL the process it started)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def install(folder: Path) -> Path:
    spec = Path(folder) / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"argv": [sys.executable, str(Path(__file__).resolve()), "-f", "{connection_file}"],
                                "display_name": "Python 3 (exit reported)", "language": "python"}))
    return spec


def run(arguments) -> int:
    before = oom_kills()
    child = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", *arguments],
                             preexec_fn=_die_with_parent)
    for sig in PASSED_ON:
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    code = child.wait()
    print(f"[kernel_exit] the kernel process ended with {how_it_ended(code)}; at its start: {before}; "
          f"now: {oom_kills()}", file=sys.stderr, flush=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "install":
        print(install(Path(sys.argv[2])))
    elif sys.argv[1:2] == ["-f"]:
        sys.exit(run(sys.argv[1:]))
    else:
        sys.exit(__doc__)
