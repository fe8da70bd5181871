"""Shared test setup: Jittor's flags come from ``styleblend`` (imported first), quiet progress bars."""
import os

os.environ.setdefault("STYLEBLEND_QUIET", "1")

# Jittor configured for this machine, with the default SIGCHLD handling that nbval's kernel shutdown needs
import styleblend.backend  # noqa: E402,F401
