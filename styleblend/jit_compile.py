"""How Jittor compiles, made safe for the processes this project runs (docs/first-run.md has the evidence).

Jittor compiles its C++ core and every operator kernel on first use into its cache (``~/.cache/jittor``; the
first process on a machine compiles for minutes). It compiles in parallel in two ways, both unsafe inside a
process that already runs threads — a Jupyter kernel (its I/O and heartbeat threads), a CUDA process:

* **the core and its CUDA libraries**: ``jittor_utils.run_cmds`` *forks* a ``multiprocessing.Pool`` the first time
  it is called. A forked child inherits the locks other threads held at that instant, without those threads; a
  worker that blocks or dies leaves ``Pool.imap`` waiting for ever. :func:`install` swaps in :func:`run_cmds`,
  which compiles in fresh interpreters (started as plain subprocesses: no fork of this process and, unlike
  multiprocessing's spawn, no import of the user's ``__main__``) and turns a dead worker into an error.
* **operator kernels**: C++ threads, one compiler process each. Inside a Jupyter kernel they are switched off
  (:func:`flags`): a normal run compiles every kernel beforehand in a plain process (``styleblend warmup``), so a
  notebook that still meets a new kernel compiles it in its main thread.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Dict, List

from .progress import progress


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval): its kernel application is running. (Only
    importing ipykernel, as nbval's pytest plugin does, is not enough.)"""
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    return kernelapp is not None and kernelapp.IPKernelApp.initialized()


def flags() -> Dict[str, str]:
    """Jittor's compile flags for this process (environment variables read when Jittor is imported)."""
    return {"use_parallel_op_compiler": "0"} if in_notebook_kernel() else {}


def workers() -> int:
    """Compiler processes at once: one per CPU core, at most one per 3 GiB of memory (g++ on Jittor's core needs
    about that), at most 16 — Jittor's own bound, less its count of 16 processes on a 2-core machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(cores, int(memory_gib // 3), 16))


# A compile worker: a fresh interpreter (no fork of this process, no import of its __main__) that runs Jittor's
# own do_compile on each command line it reads and answers with one line: ANSWER, then "ok" or the error.
ANSWER = "<styleblend-compile>"
WORKER = f"""
import json, sys, jittor_utils
jittor_utils.pool_initializer()
for line in sys.stdin:
    try:
        jittor_utils.do_compile(json.loads(line))
        answer = "ok"
    except Exception as exc:
        answer = json.dumps(f"{{type(exc).__name__}}: {{exc}}")
    print("{ANSWER}" + answer, flush=True)
"""


class CompileError(RuntimeError):
    """A compile command failed, or its worker process died."""


def run_cmds(cmds: List[str], cache_path: str, jittor_path: str, msg: str = "run_cmds") -> None:
    """Drop-in for ``jittor_utils.run_cmds``: the same compile commands, each through Jittor's own ``do_compile``
    (its cache check included), in worker processes started fresh; a progress bar over the files."""
    if threading.current_thread() is threading.main_thread():
        # Jittor's SIGCHLD handler (active from its first import on) ends the whole process, without a word in a
        # notebook, when any child dies by a signal; a dead worker is an error below instead
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    jobs = queue.Queue()
    for cmd in cmds:
        jobs.put(json.dumps([cmd, cache_path, jittor_path]))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(max(1, min(workers(), len(cmds))))]
    done, errors = queue.Queue(), []

    def feed(proc):
        while not errors:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            proc.stdin.write(job + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            while line and not line.startswith(ANSWER):  # anything else the compile printed
                sys.stderr.write(line)
                line = proc.stdout.readline()
            answer = line[len(ANSWER):].strip()
            if answer != "ok":
                errors.append(json.loads(answer) if answer else
                              f"a compile worker died (exit status {proc.wait()}) while compiling {job}")
            done.put(1)
        with contextlib.suppress(BrokenPipeError):  # a worker that died has no stdin left to close
            proc.stdin.close()
        proc.wait()

    threads = [threading.Thread(target=feed, args=(proc,), daemon=True) for proc in procs]
    for thread in threads:
        thread.start()
    # delay: the bar shows only when files really compile (a cached core is checked in about a second)
    with progress(total=len(cmds), desc=msg, unit="file", delay=2) as bar:
        while any(thread.is_alive() for thread in threads):
            try:
                bar.update(done.get(timeout=0.2))
            except queue.Empty:
                pass
    if errors:
        raise CompileError(errors[0])


def install() -> None:
    """Before ``import jittor``: Jittor's compiler module calls ``jittor_utils.run_cmds`` by attribute, so this
    replacement serves every parallel compile of the process (unless Jittor's own serial mode is asked for)."""
    import jittor_utils

    if os.environ.get("DISABLE_MULTIPROCESSING") != "1":
        jittor_utils.run_cmds = run_cmds
