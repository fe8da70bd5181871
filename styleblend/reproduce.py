"""The whole StyleBlend chain for a set of styles: SDEdit data → coarse → fine → generate.

Each stage reuses its outputs only when the run manifest (:mod:`styleblend.manifest`) says the same model,
recipe and data made them and the stage finished; a stage that was interrupted is redone on its own; outputs
that another model, recipe or data made stop the run with what changed (``force=True`` replaces them). Each
stage first deletes the temporary files a killed write left in its folder.
:func:`reproduce` checks every selected style's inputs before training any (:mod:`styleblend.validate`) and holds
each style's lock (:mod:`styleblend.locks`) while it runs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from .checkpoints import STAGE_FILES
from .config import BlendParams, Recipe, style_blend_params
from .data import StyleData, result_path, select_styles
from .errors import StyleBlendError
from .io import remove_temp_files
from .locks import style_lock
from .manifest import (REDO, REUSE, checkpoint_manifest, decide, digest, recording, results_manifest,
                       stage_key)
from .memory import gpu_used_mb, peak_rss_mb
from .run_context import SetPaths, open_set
from .validate import validate_styles

RETRAIN = ("retrain with --force (force=True; it replaces them), or keep them and give other --checkpoints and "
           "--results folders")
REGENERATE = "regenerate with --force (force=True; it replaces them), or keep them and give another --results folder"


@dataclass
class StyleSummary:
    """What one style's run did: the per-style summary line of the command line."""
    style: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    gpu_mb: Optional[float] = None
    written: List[Path] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)

    def line(self) -> str:
        gpu = f", GPU {self.gpu_mb:.0f} MiB" if self.gpu_mb is not None else ""
        skipped = f", skipped {'/'.join(self.skipped)} (done)" if self.skipped else ""
        return (f"style {self.style}: {self.seconds:.1f} s, peak RAM {self.peak_mb:.0f} MiB{gpu}, "
                f"{len(self.written)} files written{skipped}")


def run_sdedit(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, force: bool = False):
    """Stage 1: the SDEdit images that keep the style images' layout (reused when the manifest matches); kept by
    CLIP patch-token similarity when the recipe names ``sdedit.clip_model``, else at random (seeded)."""
    from .sdedit import build_sdedit_data, clip_patch_selector, kept_files

    ckpt = paths.checkpoint(style_data.style)
    manifest, key = checkpoint_manifest(ckpt), stage_key("sdedit", sd, recipe, style_data)
    files = [f for item in style_data.images for f in kept_files(item, recipe.sdedit, ckpt.sdedit_dir)]
    remove_temp_files(ckpt.sdedit_dir)
    if decide(manifest, "sdedit", key, files, force, RETRAIN) == REUSE:  # every file is there: nothing is made
        result = build_sdedit_data(sd, style_data, recipe.sdedit, ckpt.sdedit_dir, recipe.seed)
        how = (f"ranked by the CLIP model {recipe.sdedit.clip_model}" if recipe.sdedit.clip_model else
               "kept at random: the recipe names no sdedit.clip_model")
        result.note += f" ({how})"
        return result
    selector = clip_patch_selector(recipe.sdedit.clip_model) if recipe.sdedit.clip_model else None
    with recording(manifest, "sdedit", key):  # an interrupted run resumes image by image
        return build_sdedit_data(sd, style_data, recipe.sdedit, ckpt.sdedit_dir, recipe.seed, selector, force)


def run_coarse(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, force: bool = False):
    """Stage 2: ``<C>`` and the text-encoder LoRA; None when reused."""
    from .coarse import train_coarse

    ckpt = paths.checkpoint(style_data.style)
    manifest, key = checkpoint_manifest(ckpt), stage_key("coarse", sd, recipe, style_data)
    for folder in (ckpt.folder, ckpt.sdedit_dir):
        remove_temp_files(folder)
    action = decide(manifest, "coarse", key, [ckpt.path(k) for k in STAGE_FILES["coarse"]], force, RETRAIN)
    if action == REUSE:
        return None
    sdedit = run_sdedit(sd, style_data, recipe, paths, force)
    with recording(manifest, "coarse", key):
        return train_coarse(sd, style_data, sdedit, recipe.coarse, ckpt, recipe.seed, force=force or action == REDO,
                            staged=recipe.staged_backward)


def run_fine(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, force: bool = False):
    """Stage 3: ``<F>`` by textual inversion, then the UNet LoRA; None when reused."""
    from .fine import train_fine

    ckpt = paths.checkpoint(style_data.style)
    manifest, key = checkpoint_manifest(ckpt), stage_key("fine", sd, recipe, style_data)
    remove_temp_files(ckpt.folder)
    action = decide(manifest, "fine", key, [ckpt.path(k) for k in STAGE_FILES["fine"]], force, RETRAIN)
    if action == REUSE:
        return None
    with recording(manifest, "fine", key):
        return train_fine(sd, style_data, recipe.fine, ckpt, recipe.seed, force=force or action == REDO,
                          staged=recipe.staged_backward)


def run_generate(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, seed: Optional[int] = None,
                 force: bool = False, params: Optional[BlendParams] = None, mode: str = "full") -> List[Path]:
    """Stage 4: every prompt of the style through the two-branch sampler into ``<results>/<set>/<style>/``.

    The images' key holds the trained stages' keys, so retrained checkpoints make stale images an error.
    ``params`` (default: the style's blend settings) and ``mode`` (:data:`styleblend.blend.MODES`) are an
    ablation's; a mode other than the full blend joins the key (the full blend's key stays as it always was, so
    existing results stay valid)."""
    from .blend import generate_style

    style, ckpt = style_data.style, paths.checkpoint(style_data.style)
    trained = checkpoint_manifest(ckpt).stages
    unfinished = [s for s in STAGE_FILES if not trained.get(s, {}).get("complete")]
    if unfinished:
        raise StyleBlendError(f"{ckpt.folder}: the {' and '.join(unfinished)} stage(s) have not finished there "
                              "(train them first: styleblend coarse / fine, or reproduce)")
    params = params or style_blend_params(recipe, paths.set_name, style)[0]
    key = stage_key("generate", sd, recipe, style_data,
                    {"trained": digest([trained[s]["key"] for s in STAGE_FILES]), "params": digest(asdict(params)),
                     "seed": seed, **({"mode": mode} if mode != "full" else {})})
    results_dir = paths.results_root / paths.set_name / style
    manifest = results_manifest(results_dir, paths.set_name, style)
    outputs = [result_path(paths.results_root, paths.set_name, style, p) for p in style_data.prompts.values()]
    remove_temp_files(results_dir)
    if decide(manifest, "generate", key, outputs, force, REGENERATE) == REUSE:
        return outputs
    with recording(manifest, "generate", key):  # an interrupted run resumes prompt by prompt
        return generate_style(sd, style_data, ckpt, params, recipe.blend, paths.results_root, paths.set_name,
                              seed=seed, force=force, mode=mode)


def run_style(sd, style_data: StyleData, recipe: Recipe, paths: SetPaths, seed: Optional[int] = None,
              force: bool = False) -> StyleSummary:
    """All stages for one style, with its summary (the caller holds the style's lock)."""
    start, style = time.perf_counter(), style_data.style
    summary = StyleSummary(style)
    for stage, run in (("coarse", run_coarse), ("fine", run_fine)):
        result = run(sd, style_data, recipe, paths, force)
        if result is None:
            summary.skipped.append(stage)
        else:
            summary.written += list(result.files)
    before = {p: p.stat().st_mtime_ns for p in paths.results_root.glob(f"{paths.set_name}/{style}/*.png")}
    images = run_generate(sd, style_data, recipe, paths, seed, force)
    summary.written += [p for p in images if p.stat().st_mtime_ns != before.get(p)]
    summary.seconds = time.perf_counter() - start
    summary.peak_mb = peak_rss_mb()
    summary.gpu_mb = gpu_used_mb()
    return summary


def reproduce(set_name: str, data_root, results_root, checkpoints_root, styles: Optional[Sequence[str]] = None,
              model: Optional[str] = None, config: Optional[str] = None, seed: Optional[int] = None,
              force: bool = False, smoke: bool = False, echo=print) -> List[StyleSummary]:
    """Train and generate every selected style of a set; prints the inputs' notes, then a line per style."""
    chosen = select_styles(data_root, styles)  # a bad selection fails before the model loads
    run = open_set(data_root, set_name, model, config, results_root, checkpoints_root, smoke=smoke, echo=echo)
    inputs = validate_styles(run.paths.data_root, chosen, run.recipe, run.paths.set_name, run.sd.tokenizer)
    for note in inputs.notes:
        echo(f"note: {note}")
    summaries = []
    for style in chosen:
        with style_lock(run.paths.checkpoint(style)):
            summary = run_style(run.sd, inputs.styles[style], run.recipe, run.paths, seed, force)
        echo(summary.line())
        summaries.append(summary)
    return summaries
