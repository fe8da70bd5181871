"""One style per GPU: parse ``GPUS``, claim a free GPU for a style, and pin the style's processes to it.

A claim is a non-blocking lock (:func:`styleblend.locks.try_lock`) on ``<lock_dir>/<id>.lock``, held for the
whole style. Parallel jobs (``make -jN reproduce GPUS=0,1,…``) thereby share the listed GPUs one style each, and
the operating system drops the lock when its holder exits, so a crashed or killed job never leaves a GPU busy.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..locks import try_lock

_GPU_ID = re.compile(r"[A-Za-z0-9_-]+")  # an index or a GPU-… UUID, as CUDA_VISIBLE_DEVICES takes them


def parse_gpus(text: Optional[str]) -> List[str]:
    """``"0,1,2"`` or ``"0 1 2"`` -> ``["0", "1", "2"]``; empty -> ``[]`` (nothing is pinned)."""
    ids = (text or "").replace(",", " ").split()
    bad = [gpu for gpu in ids if not _GPU_ID.fullmatch(gpu)]
    if bad:
        raise ConfigError(f"GPUS={text!r}: {', '.join(bad)} is not a GPU index or UUID")
    if len(set(ids)) < len(ids):
        raise ConfigError(f"GPUS={text!r}: a GPU is listed twice")
    return ids


def gpu_env(env: Mapping[str, str], gpu: Optional[str]) -> Dict[str, str]:
    """``env`` for processes that must see exactly the one GPU ``gpu`` (``env`` unchanged when it is None)."""
    if gpu is None:
        return dict(env)
    return dict(env, CUDA_VISIBLE_DEVICES=gpu, STYLEBLEND_DEVICE="cuda")


def _first_free(gpus: Sequence[str], lock_dir: Path) -> Tuple[Optional[str], Optional[int]]:
    for gpu in gpus:
        fd = try_lock(lock_dir / f"{gpu}.lock")
        if fd is not None:
            return gpu, fd
    return None, None


@contextmanager
def claim_gpu(gpus: Sequence[str], lock_dir, poll: float = 5.0,
              echo: Callable[[str], None] = print) -> Iterator[Optional[str]]:
    """Hold the first free GPU of ``gpus`` for the ``with`` block, waiting while all are busy; None without ``gpus``."""
    if not gpus:
        yield None
        return
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    gpu, fd = _first_free(gpus, lock_dir)
    if fd is None:
        echo(f"all GPUs ({', '.join(gpus)}) are busy; waiting for one (locks in {lock_dir})")
    while fd is None:
        time.sleep(poll)
        gpu, fd = _first_free(gpus, lock_dir)
    try:
        yield gpu
    finally:
        os.close(fd)
