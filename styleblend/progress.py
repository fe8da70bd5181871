"""One progress bar for every long loop: tqdm, quiet under papermill, CI, or ``STYLEBLEND_QUIET=1``."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def quiet() -> bool:
    """True when bars would only clutter a log: CI, papermill runs, or an explicit request."""
    return (os.environ.get("STYLEBLEND_QUIET") == "1" or os.environ.get("CI") == "true"
            or "papermill" in sys.modules or os.environ.get("PAPERMILL_EXECUTION") == "1")


def progress(iterable=None, desc: str = "", total: int = None, **kwargs):
    """``tqdm`` with this project's quiet rule."""
    return tqdm(iterable, desc=desc, total=total, disable=quiet(), leave=False, **kwargs)
