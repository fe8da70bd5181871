"""Shared test setup: Jittor's flags come from ``styleblend`` (imported first), quiet progress bars."""
import os

os.environ.setdefault("STYLEBLEND_QUIET", "1")

import styleblend  # noqa: E402,F401  (sets Jittor's flags before anything imports jittor)
