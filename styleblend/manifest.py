"""What made a style's files, and whether a run may reuse them: the run manifest.

Every stage records the identity of its inputs before it writes and marks the record complete after its last
file: ``<checkpoints>/<set>/<style>/manifest.json`` holds the ``sdedit``, ``coarse`` and ``fine`` stages,
``<results>/<set>/<style>/.manifest.json`` (hidden, so the folder stays a plain set of images) the ``generate``
stage. A stage's **key** is what its outputs depend on:

* ``model`` — the model folder and a fingerprint of its contents (configs, weight file sizes and their first
  and last MiB), so another model in the same path, or the same model elsewhere, is told apart correctly;
* ``recipe`` — a hash of the recipe sections the stage reads, and the seed;
* ``data`` — a hash of the style's reference images (and, for ``generate``, its prompts and blend settings);
* ``generate`` also holds the keys of the coarse and fine stages it used, so retrained styles regenerate.

The package version is recorded but not compared: an upgrade does not invalidate a day of training.

:func:`decide` applies the rule: a complete record with the same key is reused; an incomplete one (a run that
was killed) is redone on its own; a different key, or files no record accounts for, stop the run with what
changed, unless ``force`` (which replaces them).
"""
from __future__ import annotations

import functools
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional

from . import __version__, io
from .errors import StyleBlendError

CHECKPOINT_MANIFEST = "manifest.json"
RESULTS_MANIFEST = ".manifest.json"
EDGE_BYTES = 1 << 20  # a large file is fingerprinted by its size and its first and last MiB
# the recipe sections each stage reads (with the seed and the weights' precision)
STAGE_SECTIONS = {"sdedit": ("sdedit",), "coarse": ("sdedit", "coarse"), "fine": ("fine",), "generate": ("blend",)}
REUSE, RUN, REDO = "reuse", "run", "redo"  # what decide() tells a stage to do
KEY_WORDS = {"recipe": "recipe (the sections this stage reads, or the seed)",  # a key's parts, as errors name them
             "data": "set of reference images (or prompts)", "trained": "training (a retrained coarse or fine stage)",
             "params": "blend settings", "seed": "seed", "mode": "sampling mode (ablation)"}


class StaleError(StyleBlendError):
    """Outputs exist that another model, recipe or data made (or that no manifest accounts for); ``reason`` says
    which, without the folder and the remedy."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def digest(value) -> str:
    """A short, stable hash of plain data (dicts, lists, numbers, strings)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """A hash of a file's bytes; for files over 2 MiB, of its size and its first and last MiB (weights)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= 2 * EDGE_BYTES:
            h.update(f.read())
        else:
            h.update(str(size).encode())
            h.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))
    return h.hexdigest()[:16]


def model_fingerprint(folder: str) -> str:
    """A hash over every file of a model folder (relative name and :func:`file_digest`); hidden files skipped.
    Computed once per process for the same files (names, sizes, modification times)."""
    root = Path(folder)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    stats = tuple((name, (root / name).stat().st_size, (root / name).stat().st_mtime_ns) for name in files)
    return _fingerprint(str(root), stats)


@functools.lru_cache(maxsize=8)
def _fingerprint(folder: str, stats: tuple) -> str:
    return digest({name: file_digest(Path(folder) / name) for name, _, _ in stats})


def model_identity(sd) -> Dict[str, str]:
    """The ``model`` part of a key: the loaded model's folder and fingerprint."""
    return {"path": str(sd.path), "fingerprint": model_fingerprint(str(Path(sd.path).resolve()))}


def data_digest(style_data, with_prompts: bool = False) -> str:
    """A hash of the style's reference files (names and bytes) and, with ``with_prompts``, its prompts."""
    value = {item.path.name: file_digest(item.path) for item in style_data.images}
    if with_prompts:
        value["prompts"] = style_data.prompts
    return digest(value)


def stage_key(stage: str, sd, recipe, style_data, extra: Optional[dict] = None) -> dict:
    """What ``stage``'s outputs depend on (see the module docstring); ``extra`` adds generate's own inputs."""
    plain = recipe.to_dict()
    recipe_part = {"seed": recipe.seed, "precision": recipe.precision, "image_fit": recipe.image_fit,
                   **{name: plain[name] for name in STAGE_SECTIONS[stage]}}
    key = {"model": model_identity(sd), "recipe": digest(recipe_part),
           "data": data_digest(style_data, with_prompts=stage == "generate")}
    if extra:
        key.update(extra)
    return key


@dataclass
class Manifest:
    """One manifest file: the set, the style and each stage's record (key, complete, version)."""
    path: Path
    set_name: str
    style: str
    stages: Dict[str, dict]

    @classmethod
    def load(cls, path, set_name: str, style: str) -> "Manifest":
        """The manifest at ``path`` (empty when absent); one of another set or style is an error."""
        path = Path(path)
        if not path.is_file():
            return cls(path, set_name, style, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stages = dict(data["stages"])
            found = (str(data["set"]), str(data["style"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StaleError(f"{path}: not a readable run manifest ({exc}); move it away to start afresh") from exc
        if found != (set_name, style):
            raise StaleError(f"{path}: made for style {found[1]} of set {found[0]}, not style {style} of set "
                             f"{set_name}; these files belong to another style")
        return cls(path, set_name, style, stages)

    def save(self) -> None:
        data = {"set": self.set_name, "style": self.style, "stages": self.stages}
        io.write_atomic(self.path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"),
                        overwrite=True)

    def model(self) -> Optional[dict]:
        """The model the recorded stages used (the last complete one's), or None."""
        done = [entry["key"]["model"] for entry in self.stages.values() if entry.get("complete")]
        return done[-1] if done else None


def checkpoint_manifest(ckpt) -> Manifest:
    """The manifest of a :class:`styleblend.checkpoints.StyleCheckpoint`."""
    return Manifest.load(ckpt.folder / CHECKPOINT_MANIFEST, ckpt.set_name, ckpt.style)


def results_manifest(results_dir: Path, set_name: str, style: str) -> Manifest:
    """The manifest of ``<results>/<set>/<style>/``."""
    return Manifest.load(Path(results_dir) / RESULTS_MANIFEST, set_name, style)


def recorded_models(results_root, set_name: str, styles) -> Dict[str, list]:
    """``"<folder> [<fingerprint>]"`` of the model each style's images were made with (their manifest), mapped to
    those styles; styles without generated images are left out."""
    made: Dict[str, list] = {}
    for style in styles:
        model = results_manifest(Path(results_root) / set_name / style, set_name, style).model()
        if model:
            made.setdefault(f"{model['path']} [{model['fingerprint']}]", []).append(style)
    return made


def run_digest(model: Optional[str], recipe) -> str:
    """What a run of the notebooks is made of, for its report's rows: the model (a local folder's fingerprint,
    the committed toy model's, else the name given; ``""``: the default model) and the effective recipe."""
    from .sd.loading import TOY_MODEL

    folder = TOY_MODEL if model == "toy" else Path(model).expanduser() if model else None
    identity = model_fingerprint(str(folder.resolve())) if folder is not None and folder.is_dir() else model or ""
    return digest({"model": identity, "recipe": recipe.to_dict()})


def decide(manifest: Manifest, stage: str, key: dict, outputs: Iterable[Path], force: bool,
           remedy: str) -> str:
    """:data:`REUSE`, :data:`RUN` (nothing there, or ``force``) or :data:`REDO` (an interrupted run of the same
    key: its own files may be replaced); a :class:`StaleError` saying what differs, and ``remedy``, otherwise."""
    outputs = list(outputs)
    present = [p for p in outputs if p.exists()]
    if force:
        return RUN
    entry = manifest.stages.get(stage)
    if entry is None:
        if present:
            raise StaleError(f"{present[0].parent}: {', '.join(p.name for p in present[:3])} exist(s), but "
                             f"{manifest.path.name} records no {stage} stage that made them; {remedy}",
                             "no record of what made them")
        return RUN
    changed = differences(entry["key"], key)
    if changed:
        raise StaleError(f"{manifest.path.parent}: the {stage} stage there was made with another "
                         f"{'; '.join(changed)}; {remedy}", f"made with another {'; '.join(changed)}")
    if entry.get("complete") and len(present) == len(outputs):
        return REUSE
    return REDO if present else RUN


def differences(old: dict, new: dict) -> list:
    """What differs between two keys, in words (empty when they match)."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if name == "model" and a and b:
            same_path = a.get("path") == b.get("path")
            out.append(f"model ({'same folder, other contents: ' if same_path else ''}was {a.get('path')} "
                       f"[{a.get('fingerprint')}], now {b.get('path')} [{b.get('fingerprint')}])")
        else:
            out.append(KEY_WORDS.get(name, name))
    return out


@contextmanager
def recording(manifest: Manifest, stage: str, key: dict) -> Iterator[None]:
    """Record ``stage`` as started with ``key`` before the block and as complete after it; a failure inside
    leaves it incomplete, so the next run redoes that stage alone. The file is read again before each write,
    so stages recorded meanwhile (SDEdit inside the coarse stage) are kept."""
    _update(manifest, stage, {"key": key, "complete": False, "version": __version__})
    yield
    _update(manifest, stage, {"key": key, "complete": True, "version": __version__})


def _update(manifest: Manifest, stage: str, entry: dict) -> None:
    manifest.stages = Manifest.load(manifest.path, manifest.set_name, manifest.style).stages
    manifest.stages[stage] = entry
    manifest.save()
