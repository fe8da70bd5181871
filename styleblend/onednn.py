"""oneDNN for Jittor's CPU kernels: with it, Jittor runs convolutions and matrix products through oneDNN instead of
its own generated loops (bench/toy_cpu.py on 2 cores: VAE decoding 56×, a toy pretraining step 4.5× faster;
docs/performance.md).

Jittor looks for oneDNN 2.x in ``<Jittor home>/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp`` and downloads it there
from its own server when that folder lacks the library. The ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` wheels
(dependencies on Linux x86-64: oneDNN 2.6, which Jittor's oneDNN operators compile against) put the same library and
headers under ``sys.prefix``; :func:`provide` points Jittor's folder at them, so nothing is downloaded, and loads the
library so that Jittor's compiled operators find it.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import sys
import uuid
from pathlib import Path
from typing import Optional

FOLDER = "dnnl_lnx_2.2.0_cpu_gomp"  # the name Jittor 1.3 checks before downloading


def installed(prefix: Path = Path(sys.prefix)) -> Optional[Path]:
    """``prefix`` when the oneDNN wheels' library and headers are there, else None."""
    return prefix if (prefix / "lib" / "libdnnl.so.2").is_file() and (prefix / "include" / "dnnl.hpp").is_file() \
        else None


def jittor_folder() -> Path:
    """Where Jittor looks for oneDNN (its home honours ``JITTOR_HOME`` and its config.json)."""
    import jittor_utils

    return Path(jittor_utils.home()) / ".cache" / "jittor" / "mkl" / FOLDER


def provide(prefix: Optional[Path] = None) -> bool:
    """Make the installed oneDNN Jittor's (before ``import jittor``); False where the wheels are missing, or where
    Jittor's folder is its own and holds no library (Jittor would try to download one).

    Jittor's folder becomes a link to a folder of links into this environment (one per environment, so several
    environments can share a Jittor home); the link is replaced atomically, as processes may start together. A
    folder Jittor downloaded itself is used as it is."""
    prefix = installed(prefix or Path(sys.prefix))
    if prefix is None:
        return False
    folder = jittor_folder()
    if folder.is_dir() and not folder.is_symlink():
        if not (folder / "lib" / "libmkldnn.so").is_file():
            return False
    else:
        links = folder.parent / f".{FOLDER}.{hashlib.sha1(str(prefix).encode()).hexdigest()[:12]}"
        (links / "lib").mkdir(parents=True, exist_ok=True)
        for link, target in ((links / "lib" / "libmkldnn.so", prefix / "lib" / "libdnnl.so.2"),
                             (links / "include", prefix / "include")):
            with contextlib.suppress(FileExistsError):
                link.symlink_to(target)
        if not folder.is_symlink() or os.readlink(folder) != links.name:
            staged = folder.parent / f".{FOLDER}.{uuid.uuid4().hex}.link"
            staged.symlink_to(links.name)
            os.replace(staged, folder)
    ctypes.CDLL(str(folder / "lib" / "libmkldnn.so"), mode=ctypes.RTLD_GLOBAL)
    return True
