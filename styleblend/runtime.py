"""Jittor's flags, set once before Jittor is imported (the only place that does so).

Jittor reads its compiler flags from environment variables when it is first imported, so
``styleblend/__init__.py`` calls :func:`configure` before any module imports ``jittor``.

* CPU (the default here and in CI): no CUDA; oneDNN from its wheels where installed (``use_mkl=1``,
  :mod:`styleblend.onednn`), else none and no download (``use_mkl=0``); ``nvcc_path`` empty so a stray ``nvcc``
  on the PATH cannot make Jittor look for CUDA libraries.
* GPU (``STYLEBLEND_DEVICE=cuda``): ``nvcc_path`` from ``$CUDA_HOME``, and the CUDA 13 settings measured on
  H100/H200 (``use_cutt=0 use_cutlass=0 use_nccl=0``). Run ``make gpu-setup`` once on such a machine first
  (see ``styleblend/gpu_setup.py``).

* Compiling: :mod:`styleblend.jit_compile` (no forked compile pool; no compile threads in a notebook kernel).

A user's own environment variable always wins: ``configure`` only sets what is unset.
"""
from __future__ import annotations

import os
import sys

from . import jit_compile, onednn

CPU_FLAGS = {"use_mkl": "0", "nvcc_path": "", "FIX_TORCH_ERROR": "0", "log_silent": "1"}
GPU_FLAGS = {"use_mkl": "0", "use_cutt": "0", "use_cutlass": "0", "use_nccl": "0", "FIX_TORCH_ERROR": "0",
             "log_silent": "1"}


def wants_gpu() -> bool:
    """True when the user asked for CUDA with ``STYLEBLEND_DEVICE=cuda``."""
    return os.environ.get("STYLEBLEND_DEVICE", "cpu").lower() in ("cuda", "gpu")


def configure() -> None:
    """Set Jittor's environment flags for this machine; must run before ``import jittor``."""
    if "jittor" in sys.modules:
        return
    flags = dict(GPU_FLAGS) if wants_gpu() else dict(CPU_FLAGS)
    flags.update(jit_compile.flags())
    if not wants_gpu() and os.environ.get("use_mkl", "1") == "1" and onednn.provide():
        flags["use_mkl"] = "1"
    if wants_gpu():
        cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
        flags["nvcc_path"] = os.path.join(cuda_home, "bin", "nvcc")
    for key, value in flags.items():
        os.environ.setdefault(key, value)


def start(seed: int | None = None):
    """Import Jittor configured for this machine, switch CUDA on if asked, and seed it; returns ``jittor``."""
    configure()
    jit_compile.install()
    import jittor as jt

    jt.flags.use_cuda = 1 if wants_gpu() else 0
    if seed is not None:
        jt.set_global_seed(seed)
    return jt


def describe() -> dict:
    """What the notebooks print in their environment check."""
    jt = start()
    return {
        "jittor": jt.__version__,
        "device": "cuda" if jt.flags.use_cuda else "cpu",
        "python": sys.version.split()[0],
    }
