"""Peak memory, for the per-style summaries and the notebook run report."""
from __future__ import annotations

import resource
import shutil
import subprocess
import sys


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def gpu_used_mb() -> float | None:
    """GPU memory in use now on the first visible GPU (``nvidia-smi``), or None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.split()[0])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None
