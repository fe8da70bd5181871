"""Exclusive locks the operating system drops when their holder exits (``fcntl.flock``), so a crashed or killed
run never leaves one behind: one per GPU (:mod:`styleblend.runners.gpus`) and one per style folder, which keeps
two runs from writing the same checkpoints and results at once.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterator, Optional

from .errors import StyleBlendError

STYLE_LOCK = ".lock"  # <checkpoints>/<set>/<style>/.lock


class LockedError(StyleBlendError):
    """Another live process holds the lock; the message says who."""


def try_lock(path) -> Optional[int]:
    """An open descriptor holding ``path``'s exclusive lock, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def holding(path, what: str) -> Iterator[None]:
    """Hold ``path``'s lock for the ``with`` block; when another run holds it, a :class:`LockedError` naming
    ``what`` and the holder (process id, host, command, start time), written into the file by the holder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = try_lock(path)
    if fd is None:
        holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
        raise LockedError(f"{what} is in use by another run ({holder}; lock {path}); wait for it to end or stop it")
    command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])[:200]
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                 f"{command}\n".encode())
    try:
        yield
    finally:
        os.close(fd)


def style_lock(ckpt) -> ContextManager[None]:
    """The lock of one style's folders (a :class:`styleblend.checkpoints.StyleCheckpoint`'s ``.lock``)."""
    return holding(ckpt.folder / STYLE_LOCK, f"style {ckpt.style} of set {ckpt.set_name} ({ckpt.folder})")
