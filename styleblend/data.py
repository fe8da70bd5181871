"""Style folders: reference images (file name = caption), ``prompt.json``, result paths.

A style set is a folder of styles, one subfolder each::

    <data_root>/<style>/images/woman_walking_a_dog.png   caption "woman walking a dog"
    <data_root>/<style>/prompt.json                      {"0": "Ring", "1": "Hotel", ...}

Results go to ``<results>/<set>/<style>/<Prompt>.png``, the prompt spelled as in ``prompt.json`` (a prompt too
long for a file name is cut short and given a hash of the whole prompt: :func:`result_name`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps

from .errors import DataError
from .io import write_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_NAME_BYTES = 255  # the longest file name of ext4, XFS, APFS and NTFS
SHORT_NAME_BYTES = 200  # the part of an over-long prompt kept in its file name (then "-<hash>.png")
EXIF_ORIENTATION = 0x0112


@dataclass
class StyleImage:
    """One reference image, RGB and square, with the caption taken from its file name."""
    caption: str
    path: Path
    image: Image.Image


@dataclass
class StyleData:
    """A style's reference images and prompts; ``notes`` says what was converted on loading."""
    style: str
    folder: Path
    images: List[StyleImage]
    prompts: Dict[str, str]
    notes: List[str] = field(default_factory=list)


class Imported(NamedTuple):
    """What :func:`import_images` did: files copied, and files left alone because they already existed."""
    copied: List[Path]
    skipped: List[Path]


def caption_from_filename(path) -> str:
    """``woman_walking_a_dog.png`` → ``"woman walking a dog"`` (lower case, as the original)."""
    caption = " ".join(Path(path).stem.replace("_", " ").lower().split())
    if not caption:
        raise DataError(f"{path}: the file name gives no caption (name images after what they show)")
    return caption


def list_styles(data_root) -> List[str]:
    """The styles of a set: sorted names of the subfolders that have an ``images/`` folder."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    return sorted(p.name for p in root.iterdir() if (p / "images").is_dir())


def coarse_caption(caption: str) -> str:
    """The coarse stage's caption: the text before the first ``-`` (the original's rule, which makes ``cat-2.png``
    and ``cat-3.png`` one subject ``cat``); the whole caption when nothing precedes it."""
    return caption.split("-")[0].strip() or caption


def load_style(data_root, style: str, fit: str = "resize") -> StyleData:
    """Read a style folder: every reference image (8-bit RGB, upright) and its ``prompt.json``.

    ``fit`` (the recipe's ``image_fit``): ``"resize"`` keeps the image whole, so the training resize squashes it
    to a square as the original does; ``"crop"`` centre-crops it square first.
    """
    folder = Path(data_root) / style
    if not folder.is_dir():
        raise DataError(f"{folder}: no such style folder")
    paths = _image_files(folder / "images")
    if not paths:
        raise DataError(f"{folder / 'images'}: no reference images ({', '.join(IMAGE_SUFFIXES)})")
    notes: List[str] = []
    images = [StyleImage(caption_from_filename(p), p, _read_image(p, notes, fit)) for p in paths]
    return StyleData(style, folder, images, load_prompts(folder / "prompt.json"), notes)


def load_prompts(path) -> Dict[str, str]:
    """``prompt.json``: a non-empty JSON object of id → prompt, kept in file order; prompts name result files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (a JSON object of id -> prompt, e.g. {{\"0\": \"Ring\"}})")
    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(prompts, dict) or not prompts:
        raise DataError(f"{path}: must be a non-empty JSON object of id -> prompt")
    for key, prompt in prompts.items():
        if not isinstance(prompt, str):
            raise DataError(f"{path}: prompt '{key}' must be a string, got {prompt!r}")
        _check_prompt(prompt, f"{path}: prompt '{key}'")
    if len(set(prompts.values())) != len(prompts):
        raise DataError(f"{path}: two prompts are the same, so their result files would clash")
    return prompts


def result_name(prompt: str) -> str:
    """The result file name of ``prompt``: ``<prompt>.png``, or, when that is longer than file systems allow
    (:data:`MAX_NAME_BYTES`), the prompt cut short plus a stable hash of the whole prompt."""
    name = f"{prompt}.png"
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:10]
    head = prompt.encode("utf-8")[:SHORT_NAME_BYTES].decode("utf-8", errors="ignore").rstrip()
    return f"{head}-{digest}.png"


def result_path(results_root, set_name: str, style: str, prompt: str) -> Path:
    """Where the image of ``prompt`` goes: ``<results>/<set>/<style>/<result_name(prompt)>``."""
    _check_prompt(prompt, f"{set_name}/{style}")
    return Path(results_root) / set_name / style / result_name(prompt)


def import_images(src_root, dst_root) -> Imported:
    """Copy a downloaded set's images into ``dst_root/<style>/images/``, never replacing an existing file.

    Accepts ``<src>/<style>/images/*.png`` or ``<src>/<style>/*.png``; a style's ``prompt.json`` is copied
    too when ``dst_root`` has none.
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    if not src_root.is_dir():
        raise DataError(f"{src_root}: no such folder to import images from")
    copied, skipped = [], []
    for style_dir in sorted(p for p in src_root.iterdir() if p.is_dir()):
        images = _image_files(style_dir / "images") or _image_files(style_dir)
        extra = [style_dir / "prompt.json"] if (style_dir / "prompt.json").is_file() else []
        for src in images + extra:
            dst = dst_root / style_dir.name / ("images" if src in images else "") / src.name
            if dst.exists():
                skipped.append(dst)
            else:
                copied.append(write_atomic(dst, lambda tmp, src=src: shutil.copyfile(src, tmp)))
    if not copied and not skipped:
        raise DataError(f"{src_root}: no style folders with images (<style>/images/*.png or <style>/*.png)")
    return Imported(copied, skipped)


def _image_files(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_image(path) -> Image.Image:
    """An image file, loaded; a file PIL cannot read is a :class:`DataError` naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for missing, unreadable or truncated files
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def read_images(paths: Sequence) -> List[Image.Image]:
    """RGB images from files (the SDEdit images kept for training, generated results)."""
    return [open_image(path).convert("RGB") for path in paths]


def _read_image(path: Path, notes: List[str], fit: str) -> Image.Image:
    """Open a reference image upright (EXIF orientation) as 8-bit RGB (transparency over white), centre-cropped
    square when ``fit`` is ``"crop"``, noting each change."""
    img = open_image(path)
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    if orientation != 1:  # phone photos store their rotation here instead of rotating the pixels
        img = ImageOps.exif_transpose(img)
        notes.append(f"{path.name}: turned upright as its EXIF orientation ({orientation}) says")
    if img.mode != "RGB":
        notes.append(f"{path.name}: converted {img.mode} to 8-bit RGB")
        img = _to_rgb(img, path)
    w, h = img.size
    if w != h and fit == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        notes.append(f"{path.name}: centre-cropped {w}x{h} to {side}x{side}")
    elif w != h:
        notes.append(f"{path.name}: {w}x{h} is squashed to a square for training, as the original does "
                     "(image_fit: crop centre-crops instead)")
    return img


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and 32-bit grey scaled to 0-255 (PIL's own conversion clips them to
    white), transparency composited over white, CMYK and palettes through PIL."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    try:
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            out = Image.new("RGB", img.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
            return out
        return img.convert("RGB")
    except ValueError as exc:
        raise DataError(f"{path}: cannot convert its {img.mode} pixels to RGB ({exc})") from exc


def _check_prompt(prompt: str, where: str) -> None:
    if not prompt.strip() or prompt.strip(".") == "" or any(c in prompt for c in "/\\\0"):
        raise DataError(f"{where}: {prompt!r} cannot name a result file (empty, '.', '/', '\\' or NUL)")


def select_styles(data_root: Path, styles: Optional[Sequence[str]]) -> List[str]:
    """The styles to run: all found in ``data_root`` by default; unknown ids are an error naming the folder."""
    found = list_styles(data_root)
    if not styles:
        if not found:
            raise DataError(f"no style folders (<style>/images) found in {data_root}")
        return found
    missing = [s for s in styles if s not in found]
    if missing:
        raise DataError(f"style(s) {', '.join(missing)} not found in {data_root} (found: {', '.join(found)})")
    return list(styles)
