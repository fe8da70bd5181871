"""Peak memory, for the per-style summaries and the notebook run report."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def gpu_used_mb(gpu: str | None = None) -> float | None:
    """GPU memory in use now (``nvidia-smi``) on ``gpu``, by default the first of ``CUDA_VISIBLE_DEVICES``
    (nvidia-smi itself ignores that variable); None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    gpu = gpu or (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    try:
        out = subprocess.run(["nvidia-smi", "-i", gpu, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.split()[0])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None
