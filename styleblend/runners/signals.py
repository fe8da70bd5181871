"""SIGINT (Ctrl-C) and SIGTERM (``kill``, ``timeout``, a batch system's preemption) stop a command the same way.

Python's default for SIGTERM ends the process at once, skipping every ``with`` and ``finally`` block, so scratch
folders and temporary files were left beside the user's outputs. Under :func:`stop_on_signals` both signals raise
:class:`Stopped`, a KeyboardInterrupt: the cleanup runs on the way out, and the command line prints one line and
exits 130 or 143, as a shell would.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, List


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so nothing on the way catches it as an error; ``status`` is
    the exit status a shell reports for that signal (128 + its number)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum, self.status = signum, 128 + signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the ``with`` block (once: a second signal while stopping is
    ignored, so the cleanup finishes), also when a library turned it into an error of its own on the way out; the
    previous handlers come back after. Only the main thread gets signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []

    def stop(signum, _frame):
        if not received:
            received.append(signum)
            raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except Exception as err:
        if received:  # the Stopped came back wrapped (Jittor makes it a RuntimeError when it lands in its compiler)
            raise Stopped(received[0]) from err
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
