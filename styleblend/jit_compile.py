"""How Jittor compiles, made safe for the processes this project runs (docs/first-run.md has the evidence).

Jittor compiles its C++ core and every operator kernel on first use into its cache (``~/.cache/jittor``; the
first process on a machine compiles for minutes). It compiles in parallel in two ways, both unsafe inside a
process that already runs threads — a Jupyter kernel (its I/O and heartbeat threads), a CUDA process:

* **the core and its CUDA libraries**: ``jittor_utils.run_cmds`` *forks* a ``multiprocessing.Pool`` the first time
  it is called. A forked child inherits the locks other threads held at that instant, without those threads; a
  worker that blocks or dies leaves ``Pool.imap`` waiting for ever. :func:`install` swaps in :func:`run_cmds`,
  which compiles in freshly *spawned* interpreters and turns a dead worker into an error.
* **operator kernels**: C++ threads, one compiler process each. Inside a Jupyter kernel they are switched off
  (:func:`flags`): a normal run compiles every kernel beforehand in a plain process (``styleblend warmup``), so a
  notebook that still meets a new kernel compiles it in its main thread.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Dict, List

from .progress import progress


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval): ipykernel is imported before any cell runs."""
    return "ipykernel" in sys.modules


def flags() -> Dict[str, str]:
    """Jittor's compile flags for this process (environment variables read when Jittor is imported)."""
    return {"use_parallel_op_compiler": "0"} if in_notebook_kernel() else {}


def workers() -> int:
    """Compiler processes at once: one per CPU core, at most one per 3 GiB of memory (g++ on Jittor's core needs
    about that), at most 16 — Jittor's own bound, less its count of 16 processes on a 2-core machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(cores, int(memory_gib // 3), 16))


def run_cmds(cmds: List[str], cache_path: str, jittor_path: str, msg: str = "run_cmds") -> None:
    """Drop-in for ``jittor_utils.run_cmds``: the same compile commands, each through Jittor's own ``do_compile``
    (its cache check included), in spawned worker processes; a progress bar over the files."""
    import jittor_utils

    if threading.current_thread() is threading.main_thread():
        # Jittor's SIGCHLD handler (active from its first import on) ends the whole process, without a word in a
        # notebook, when any child dies by a signal; a dead worker is an error below instead
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    jobs = [[cmd, cache_path, jittor_path] for cmd in cmds]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers(), len(jobs)) or 1, mp_context=context,
                             initializer=jittor_utils.pool_initializer) as pool:
        futures = [pool.submit(jittor_utils.do_compile, job) for job in jobs]
        for future in progress(as_completed(futures), desc=msg, total=len(futures), unit="file"):
            future.result()  # a failed compile raises here; a dead worker raises BrokenProcessPool


def install() -> None:
    """Before ``import jittor``: Jittor's compiler module calls ``jittor_utils.run_cmds`` by attribute, so this
    replacement serves every parallel compile of the process (unless Jittor's own serial mode is asked for)."""
    import jittor_utils

    if os.environ.get("DISABLE_MULTIPROCESSING") != "1":
        jittor_utils.run_cmds = run_cmds
