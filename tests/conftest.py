"""Shared test setup: Jittor's flags come from ``styleblend`` (imported first), quiet progress bars."""
import os

os.environ.setdefault("STYLEBLEND_QUIET", "1")

import signal  # noqa: E402

import styleblend  # noqa: E402,F401  (sets Jittor's flags before anything imports jittor)
import jittor  # noqa: E402,F401

# Jittor installs a SIGCHLD handler that ends the whole process (quick_exit) when any child dies by a signal;
# nbval's kernel shutdown is such a child, so pytest would stop silently after the first notebook.
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
