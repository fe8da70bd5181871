"""One progress bar for every long loop: tqdm, quiet under papermill, CI, or ``STYLEBLEND_QUIET=1``."""
from __future__ import annotations

import os

from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks


def quiet() -> bool:
    """True when bars would only clutter a log: CI, or ``STYLEBLEND_QUIET=1`` (set by ``make reproduce``)."""
    return os.environ.get("STYLEBLEND_QUIET") == "1" or os.environ.get("CI") == "true"


def progress(iterable=None, desc: str = "", total: int = None, **kwargs):
    """``tqdm`` with this project's quiet rule."""
    return tqdm(iterable, desc=desc, total=total, disable=quiet(), leave=False, **kwargs)
