"""SDEdit training data for the coarse style (StyleBlend's first branch).

:func:`build_sdedit_data` pushes each reference image through SDEdit towards "A {caption}, realistic." several
times; the candidates keep the image's layout but lose its rendering, and the best ``keep`` of them (by a
selector such as :func:`clip_patch_selector`, else a seeded random subset) become the coarse style's targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from .config import SDEditConfig, format_prompt
from .data import StyleData
from .errors import ModelLoadError
from .io import save_image
from .progress import progress
from .sd.models.lora import lora_multiplier
from .sd.sampling import image_to_image

Selector = Callable[[Image.Image, List[Image.Image]], Sequence[float]]


@dataclass
class SDEditResult:
    """SDEdit data of a style: kept files per caption, the candidates made by this call, their scores."""
    kept: Dict[str, List[Path]]
    candidates: Dict[str, List[Image.Image]] = field(default_factory=dict)
    scores: Dict[str, List[float]] = field(default_factory=dict)
    note: str = ""


def kept_files(item, cfg: SDEditConfig, out_dir) -> List[Path]:
    """Where the kept SDEdit images of one reference image go: ``out_dir/<image stem>-<k>.png``."""
    return [Path(out_dir) / f"{item.path.stem}-{k:03d}.png" for k in range(cfg.keep)]


def build_sdedit_data(sd, style_data: StyleData, cfg: SDEditConfig, out_dir, seed: int,
                      selector: Optional[Selector] = None, force: bool = False) -> SDEditResult:
    """Make ``cfg.candidates`` SDEdit variants of each reference image and save the ``cfg.keep`` kept ones.

    Each candidate draws its strength from ``cfg.strengths`` and its noise seed from ``seed``. With a
    ``selector(reference, candidates) -> scores`` the highest scores are kept; without one a seeded random
    subset is kept and ``note`` says so. Files are ``out_dir/<image stem>-<k>.png``; an image whose files
    all exist is skipped (resume) unless ``force``. Any UNet LoRA of ``sd`` is switched off meanwhile.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    result = SDEditResult(kept={})
    reused = 0
    with lora_multiplier(sd.unet, 0.0):
        for item in progress(style_data.images, desc="SDEdit"):
            # drawn for every image, so a resumed run makes the same choices as a fresh one
            strengths = rng.choice(np.asarray(cfg.strengths, dtype=np.float64), size=cfg.candidates)
            seeds = rng.integers(0, 2**31 - 1, size=cfg.candidates)
            random_pick = rng.permutation(cfg.candidates)[: cfg.keep]
            files = kept_files(item, cfg, out_dir)
            result.kept.setdefault(item.caption, []).extend(files)
            if not force and all(f.is_file() for f in files):
                reused += 1
                continue
            reference = item.image.resize((cfg.resolution, cfg.resolution), Image.BICUBIC)  # the original's
            prompt = format_prompt(cfg.prompt_template, caption=item.caption)
            candidates = [image_to_image(sd, [reference], prompt, cfg.negative_prompt, float(s), cfg.steps,
                                         cfg.guidance, int(k), cfg.resolution)[0] for s, k in zip(strengths, seeds)]
            if selector is None:
                chosen = random_pick
            else:
                scores = np.asarray(selector(reference, candidates), dtype=np.float64)
                chosen = np.argsort(-scores, kind="stable")[: cfg.keep]
                result.scores.setdefault(item.caption, []).extend(scores.tolist())
            result.candidates.setdefault(item.caption, []).extend(candidates)
            for file, k in zip(files, chosen):
                if force or not file.is_file():
                    save_image(candidates[k], file, overwrite=force)
    notes = []
    if selector is None and reused < len(style_data.images):
        notes.append(f"no selector given: kept a seeded random {cfg.keep} of {cfg.candidates} candidates per "
                     "image (the original ranked them by CLIP ViT-L/14 patch-token similarity: set the recipe's "
                     "sdedit.clip_model to a local CLIP folder)")
    elif reused < len(style_data.images):
        notes.append(f"kept the {cfg.keep} of {cfg.candidates} candidates per image that the selector ranks highest")
    if reused:
        notes.append(f"reused the existing SDEdit images of {reused} image(s) in {out_dir}")
    result.note = "; ".join(notes)
    return result


def clip_patch_selector(model_path) -> Selector:
    """A selector scoring candidates by the cosine similarity of CLIP patch tokens to the reference.

    ``model_path`` is a local transformers CLIP folder (e.g. ``openai/clip-vit-large-patch14``, the
    original's choice). The last hidden state's patch tokens (class token dropped) are flattened, so the
    score rewards keeping the reference's layout. Needs PyTorch, imported only here.
    """
    path = Path(model_path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such CLIP model folder (a local transformers CLIP folder, "
                             "e.g. a download of openai/clip-vit-large-patch14)")
    try:
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModel
    except ImportError as exc:
        raise ModelLoadError(f"the CLIP selector needs PyTorch and transformers ({exc}); pip install torch, "
                             "or build the SDEdit data without a selector") from exc
    try:
        model = CLIPVisionModel.from_pretrained(str(path), local_files_only=True).eval()
        processor = CLIPImageProcessor.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many error types for an unusable folder
        raise ModelLoadError(f"{path}: cannot load a CLIP vision model ({type(exc).__name__}: {exc})") from exc

    def features(images: List[Image.Image]) -> np.ndarray:
        with torch.no_grad():
            pixels = processor(images=images, return_tensors="pt").pixel_values
            patches = model(pixel_values=pixels).last_hidden_state[:, 1:]
        return patches.reshape(len(images), -1).double().numpy()

    def select(reference: Image.Image, candidates: List[Image.Image]) -> np.ndarray:
        ref, cands = features([reference])[0], features(candidates)
        return cands @ ref / np.maximum(np.linalg.norm(cands, axis=1) * np.linalg.norm(ref), 1e-12)

    return select
