"""Quality on the toy style set, where every prompt's ground truth is known: content and style, offline.

* **object**, **colour** — the fraction of images in which the toy judge (:mod:`styleblend.toyjudge`) sees the
  prompt's object / colour ("Red fish"): does the image show what was asked?
* **judged_style** — the fraction the judge takes for the set's style (the style folder's name): does it look
  like the references' rendering, not like a pretraining style?
* **texture** — the correlation of the images' mean power spectrum (log magnitude in radial × angular bins of
  the grey image) with the references': stripes, dots, hatching and washes differ there even where colours agree.

With the challenge's colour-histogram term (``hist``) these give the two sides StyleBlend trades: content kept
from the coarse branch, texture from the fine branch.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
from PIL import Image

from .toyworld import STYLES, parse_prompt

TOY_TERMS = ("object", "colour", "judged_style", "texture")
SPECTRUM_SIDE, RADIAL_BINS, ANGULAR_BINS = 64, 8, 8


def spectrum(image: Image.Image) -> np.ndarray:
    """The grey image's log power spectrum summed in radial × angular bins (the DC term left out), normalised."""
    grey = np.asarray(image.convert("L").resize((SPECTRUM_SIDE, SPECTRUM_SIDE), Image.BOX), np.float64) / 255.0
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    f = np.arange(SPECTRUM_SIDE) - SPECTRUM_SIDE // 2
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fx, fy)
    inside = (radius > 0) & (radius < SPECTRUM_SIDE // 2)
    r_bin = np.minimum((radius / (SPECTRUM_SIDE // 2) * RADIAL_BINS).astype(int), RADIAL_BINS - 1)
    a_bin = ((np.arctan2(fy, fx) % np.pi) / np.pi * ANGULAR_BINS).astype(int) % ANGULAR_BINS
    bins = np.zeros((RADIAL_BINS, ANGULAR_BINS))
    np.add.at(bins, (r_bin[inside], a_bin[inside]), power[inside])
    described = np.log1p(bins).ravel()
    return (described - described.mean()) / (described.std() + 1e-12)


def texture_similarity(generated: Sequence[Image.Image], references: Sequence[Image.Image]) -> float:
    """Pearson correlation of the generated images' mean spectrum with the references' (1 = same texture)."""
    a = np.mean([spectrum(im) for im in generated], axis=0)
    b = np.mean([spectrum(im) for im in references], axis=0)
    return float(np.corrcoef(a, b)[0, 1])


def toy_terms(judge_net, generated: Sequence[Image.Image], prompts: Sequence[str],
              references: Sequence[Image.Image], style: str) -> Dict[str, float]:
    """The four toy terms of one style's images (``prompts[i]`` is image ``i``'s prompt)."""
    from .toyjudge import judge

    wanted = [parse_prompt(p) for p in prompts]
    seen = judge(judge_net, generated)
    return {"object": float(np.mean([o == w[1] for o, w in zip(seen["object"], wanted)])),
            "colour": float(np.mean([c == w[0] for c, w in zip(seen["colour"], wanted)])),
            "judged_style": float(np.mean([s == style for s in seen["style"]])) if style in STYLES else None,
            "texture": texture_similarity(generated, references)}
