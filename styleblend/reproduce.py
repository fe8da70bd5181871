"""The whole StyleBlend chain for a set of styles: SDEdit data → coarse → fine → generate.

Each stage is skipped when its outputs are complete, so an interrupted run resumes where it stopped.
Checkpoints are never replaced without ``force=True``; a stage whose files are only partly there stops with
an error that says so, rather than guessing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from .checkpoints import STAGE_FILES, StyleCheckpoint
from .config import Recipe, load_blend_params
from .data import StyleData, load_style, select_styles
from .errors import StyleBlendError
from .memory import gpu_used_mb, peak_rss_mb
from .run_context import SetPaths, open_set


@dataclass
class StyleSummary:
    """What one style's run did: the per-style summary line of the command line."""
    style: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    gpu_mb: Optional[float] = None
    written: List[Path] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def line(self) -> str:
        gpu = f", GPU {self.gpu_mb:.0f} MiB" if self.gpu_mb is not None else ""
        skipped = f", skipped {'/'.join(self.skipped)} (done)" if self.skipped else ""
        return (f"style {self.style}: {self.seconds:.1f} s, peak RAM {self.peak_mb:.0f} MiB{gpu}, "
                f"{len(self.written)} files written{skipped}")


def stage_done(ckpt: StyleCheckpoint, stage: str) -> bool:
    """True when every file of ``stage`` exists; an error when only some do (an interrupted write)."""
    present = [kind for kind in STAGE_FILES[stage] if ckpt.exists(kind)]
    if present and len(present) < len(STAGE_FILES[stage]):
        raise StyleBlendError(f"{ckpt.folder}: the {stage} stage is incomplete (only {', '.join(present)}); "
                              f"re-run with --force to train it again")
    return bool(present)


def run_sdedit(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, force: bool = False):
    """Stage 1: the SDEdit images that keep the style images' layout (reused when present)."""
    from .sdedit import build_sdedit_data

    ckpt = paths.checkpoint(style_data.style)
    return build_sdedit_data(sd, style_data, recipe.sdedit, ckpt.sdedit_dir, recipe.seed, force=force)


def run_coarse(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, force: bool = False):
    """Stage 2: ``<C>`` and the text-encoder LoRA; None when already trained."""
    from .coarse import train_coarse

    ckpt = paths.checkpoint(style_data.style)
    if not force and stage_done(ckpt, "coarse"):
        return None
    sdedit = run_sdedit(sd, style_data, recipe, paths, force)
    return train_coarse(sd, style_data, sdedit, recipe.coarse, ckpt, recipe.seed, force=force,
                        staged=recipe.staged_backward)


def run_fine(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, force: bool = False):
    """Stage 3: ``<F>`` by textual inversion, then the UNet LoRA; None when already trained."""
    from .fine import train_fine

    ckpt = paths.checkpoint(style_data.style)
    if not force and stage_done(ckpt, "fine"):
        return None
    return train_fine(sd, style_data, recipe.fine, ckpt, recipe.seed, force=force, staged=recipe.staged_backward)


def run_generate(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, seed: Optional[int] = None,
                 force: bool = False) -> List[Path]:
    """Stage 4: every prompt of the style through the two-branch sampler into ``<results>/<set>/<style>/``."""
    from .blend import generate_style

    params = load_blend_params(paths.set_name, style_data.style, base=recipe.blend.params)
    return generate_style(sd, style_data, paths.checkpoint(style_data.style), params, recipe.blend,
                          paths.results_root, paths.set_name, seed=seed, force=force)


def run_style(sd, style: str, recipe: Recipe, paths: SetPaths, seed: Optional[int] = None,
              force: bool = False) -> StyleSummary:
    """All stages for one style, with its summary."""
    start = time.perf_counter()
    summary = StyleSummary(style)
    style_data = load_style(paths.data_root, style)
    summary.notes += style_data.notes
    for stage, run in (("coarse", run_coarse), ("fine", run_fine)):
        result = run(sd, style_data, recipe, paths, force)
        if result is None:
            summary.skipped.append(stage)
        else:
            summary.written += list(result.files)
    before = set(paths.results_root.glob(f"{paths.set_name}/{style}/*.png"))
    images = run_generate(sd, style_data, recipe, paths, seed, force)
    summary.written += [p for p in images if force or p not in before]
    summary.seconds = time.perf_counter() - start
    summary.peak_mb = peak_rss_mb()
    summary.gpu_mb = gpu_used_mb()
    return summary


def reproduce(set_name: str, data_root, results_root, checkpoints_root, styles: Optional[Sequence[str]] = None,
              model: Optional[str] = None, config: Optional[str] = None, seed: Optional[int] = None,
              force: bool = False, smoke: bool = False, echo=print) -> List[StyleSummary]:
    """Train and generate every selected style of a set; prints a summary line per style."""
    chosen = select_styles(data_root, styles)  # a bad selection fails before the model loads
    run = open_set(data_root, set_name, model, config, results_root, checkpoints_root, smoke=smoke, echo=echo)
    summaries = []
    for style in chosen:
        summary = run_style(run.sd, style, run.recipe, run.paths, seed, force)
        echo(summary.line())
        for note in summary.notes:
            echo(f"  note: {note}")
        summaries.append(summary)
    return summaries
