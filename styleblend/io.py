"""File writing that never leaves half a file behind and never replaces a file unless asked.

Every writer goes through :func:`write_atomic`: the content is written to a temporary file in the target
folder, then moved over the target name in one step (``os.replace``), so an interrupted run leaves either
the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from .errors import ConfigError, ModelLoadError, StyleBlendError

TEMP_MARK = ".tmp"  # write_atomic's temporary files: .<stem>.<hex>.tmp<suffix>, beside their target
TEMP_STEM = 64  # the part of the target's name a temporary file keeps (a long name must still fit)
TEMP_NAME = re.compile(r"\..*\.[0-9a-f]{8}" + re.escape(TEMP_MARK) + r"(\.[^.]+)?")


def write_atomic(path, write_fn: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write_fn(temp_path)``, then move the temp file to ``path``; an existing ``path`` needs ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise StyleBlendError(f"{path} already exists; not replacing it (use --force / overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem[:TEMP_STEM]}.{uuid.uuid4().hex[:8]}{TEMP_MARK}{path.suffix}")  # hidden
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_temp_files(folder) -> List[Path]:
    """Delete the temporary files an interrupted :func:`write_atomic` left in ``folder`` (not below it); for a
    place no other writer is at work in (the style's lock, :mod:`styleblend.locks`, which ``reproduce``, the stage
    commands and the notebook runner hold). Returns them."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if p.is_file() and TEMP_NAME.fullmatch(p.name)] if folder.is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def save_image(img: Image.Image, path, overwrite: bool = False) -> Path:
    """Save a PIL image atomically; the format follows ``path``'s suffix (``.png`` …)."""
    if not isinstance(img, Image.Image):
        raise StyleBlendError(f"{path}: expected a PIL image, got {type(img).__name__}")
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise StyleBlendError(f"{path}: unknown image file type {Path(path).suffix!r}")
    return write_atomic(path, lambda tmp: img.save(tmp, format=fmt), overwrite)


def save_safetensors(path, tensors: Mapping[str, np.ndarray], metadata: Optional[Dict[str, str]] = None,
                     overwrite: bool = False) -> Path:
    """Write numpy arrays (and string metadata) as a ``.safetensors`` file, atomically."""
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(arrays, str(tmp), metadata=metadata), overwrite)


def load_safetensors(path) -> Dict[str, np.ndarray]:
    """Read every array of a ``.safetensors`` file; a missing or damaged file raises :class:`ModelLoadError`."""
    return _read_safetensors(path, lambda: load_file(str(path)))


def load_safetensors_metadata(path) -> Dict[str, str]:
    """The string metadata stored in a ``.safetensors`` header (empty when none)."""
    def read():
        with safe_open(str(path), framework="np") as f:
            return dict(f.metadata() or {})

    return _read_safetensors(path, read)


def _read_safetensors(path, read):
    if not Path(path).is_file():
        raise ModelLoadError(f"{path}: no such weight file")
    try:
        return read()
    except Exception as exc:  # safetensors raises its own error type for damaged headers
        raise ModelLoadError(f"{path}: not a readable .safetensors file ({exc})") from exc


def save_yaml(path, data, overwrite: bool = False) -> Path:
    """Write plain data (dicts, lists, numbers, strings) as YAML, keys in the given order."""
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite)


def load_yaml(path):
    """Read a YAML file; a missing file or a YAML syntax error raises :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
