"""The challenge's score for generated images: six terms, how they combine, a CSV and a table.

Layout: ``<results>/<set>/<style>/<Prompt>.png`` (named by :func:`styleblend.data.result_name`) is scored against
``<data>/<style>/images/*`` (the references) and ``<data>/<style>/prompt.json`` (read by
:func:`styleblend.data.load_style`). A style's results must be complete, one :data:`IMAGE_SIZE`² image per prompt,
or the score would compare sets of unequal size; ``allow_partial`` scores what is there and flags the style
(:attr:`StyleScore.incomplete`). Hidden files (``.name``) in a results folder are ignored. Per style::

    Style   = 0.2·DINO + 0.4·Hist + 0.4·(1 − LPIPS)
    Text    = 0.5·CLIP-R
    Quality = 0.4·(20 − min(FID, 20))/20 + 0.1·CLIP-IQA
    Final   = Style × (Text + Quality)

The set's score is the mean over its styles (every column, ``final`` included): the ``mean`` row.

The challenge's own scorer is not public (searched for, not found), so these choices are ours:

* DINO — ``facebook/dinov2-base`` pooled output (CLS token after the last layer norm), cosine similarity,
  mean over every generated × reference pair.
* Hist — per generated image, the mean of two histogram correlations (OpenCV's ``HISTCMP_CORREL``) against the
  references' averaged histogram: RGB with 16 bins per channel (16³ joint bins) and HSV *hue only* in 72 bins
  of 5° (hue from float RGB, no 8-bit rounding; grey pixels count as hue 0, as in OpenCV). Histograms are
  normalised to sum 1 before averaging. Mean over generated images; it can be slightly negative.
* LPIPS — the ``lpips`` package's SqueezeNet variant on 256² bicubic resizes in [-1, 1], mean over all pairs.
* CLIP-R — CLIP ViT-L/14: a hit when the image's own prompt (the bare word of ``prompt.json``) is among the 5
  prompts of the style's list most similar to the image; the hit rate.
* FID — Fréchet distance between Inception-v3 pool features (the TorchScript ``inception-2015-12-05.pt``
  that StyleGAN and clean-fid use; images resized to 299² bicubic) of the generated and the reference images
  of the style. With a few references the covariance is low-rank, so it is a rough, high number.
* CLIP-IQA — the same CLIP: softmax of the image's similarity (× CLIP's logit scale) to "Good photo." and
  "Bad photo."; the mean probability of "Good photo.".

A term whose weights are not given is *not computed*: its value is ``None`` with the reason, never a made-up
number, and every aggregate that needs it is ``None`` too. A term asked for whose package (``torch``,
``transformers``, ``lpips``) or weights fail to load is a :class:`~styleblend.errors.ModelLoadError`, raised before
any scoring: a score silently missing a requested term would read as complete.
"""
from __future__ import annotations

import csv
import functools
import io as _stdio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .data import list_styles, load_prompts, load_style, read_images, result_name
from .errors import DataError, ModelLoadError
from .io import write_atomic
from .progress import progress
from .toyscore import TOY_TERMS
from .toyworld import is_toy_set

TERMS = ("dino", "hist", "lpips", "clip_r", "fid", "clip_iqa")
AGGREGATES = ("style_score", "text_score", "quality_score", "final")
CHALLENGE_COLUMNS = ("style",) + TERMS + AGGREGATES
COLUMNS = CHALLENGE_COLUMNS + TOY_TERMS
NEEDS = {"style_score": ("dino", "hist", "lpips"), "text_score": ("clip_r",), "quality_score": ("fid", "clip_iqa")}
DINO_ID, CLIP_ID = "facebook/dinov2-base", "openai/clip-vit-large-patch14"
RGB_BINS, HUE_BINS, CLIP_R_TOP, FID_CAP = 16, 72, 5, 20.0
IQA_PROMPTS = ("Good photo.", "Bad photo.")
SCORE_WEIGHTS = {"dino": 0.2, "hist": 0.4, "lpips": 0.4, "clip_r": 0.5, "fid": 0.4, "clip_iqa": 0.1}  # the formula
IMAGE_SIZE = 512  # the challenge's images are IMAGE_SIZE × IMAGE_SIZE
NOT_COMPUTED = "not computed: "


@dataclass(frozen=True)
class Term:
    """One score term: its value, or ``None`` with the reason it was not computed."""
    value: Optional[float]
    reason: str = ""

    @classmethod
    def missing(cls, reason: str) -> "Term":
        return cls(None, NOT_COMPUTED + reason)


@dataclass
class StyleScore:
    """A style's terms and aggregates (``None`` = not computed, reason in ``reasons[column]``).

    ``incomplete``: what ``allow_partial`` let through (missing prompts, wrong-size images); empty when the
    style's result set was complete, so the score is comparable with other runs'.
    """
    style: str
    dino: Optional[float] = None
    hist: Optional[float] = None
    lpips: Optional[float] = None
    clip_r: Optional[float] = None
    fid: Optional[float] = None
    clip_iqa: Optional[float] = None
    style_score: Optional[float] = None
    text_score: Optional[float] = None
    quality_score: Optional[float] = None
    final: Optional[float] = None
    object: Optional[float] = None        # the toy terms (styleblend.toyscore): toy-world sets only
    colour: Optional[float] = None
    judged_style: Optional[float] = None
    texture: Optional[float] = None
    reasons: Dict[str, str] = field(default_factory=dict)
    incomplete: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class EvalModels:
    """Where each model term's weights come from: a local folder/file, or a hub id when the network allows.

    ``dino``: DINOv2-base folder; ``clip``: CLIP ViT-L/14 folder (CLIP-R and CLIP-IQA); ``lpips``: ``True`` to
    use the ``lpips`` package (its SqueezeNet backbone comes from torchvision's cache or download); ``fid``:
    the TorchScript Inception file ``inception-2015-12-05.pt``. ``None`` (the default) leaves a term not
    computed, so the defaults run offline; a term given must load, or it is a ``ModelLoadError``. ``device``:
    torch device, default CUDA when available.
    """
    dino: Optional[str] = None
    clip: Optional[str] = None
    lpips: Optional[bool] = None
    fid: Optional[str] = None
    device: Optional[str] = None
    batch_size: int = 8


def combine(dino, hist, lpips, clip_r, fid, clip_iqa, weights: Optional[Dict[str, float]] = None
            ) -> Tuple[Optional[float], ...]:
    """``(style_score, text_score, quality_score, final)`` from the terms; ``None`` in → ``None`` out.
    ``weights`` changes some of :data:`SCORE_WEIGHTS` (a what-if; the challenge's are the default)."""
    w = {**SCORE_WEIGHTS, **(weights or {})}
    style = None if None in (dino, hist, lpips) else w["dino"] * dino + w["hist"] * hist + w["lpips"] * (1.0 - lpips)
    text = None if clip_r is None else w["clip_r"] * clip_r
    quality = (None if None in (fid, clip_iqa) else
               w["fid"] * (FID_CAP - min(fid, FID_CAP)) / FID_CAP + w["clip_iqa"] * clip_iqa)
    final = None if None in (style, text, quality) else style * (text + quality)
    return style, text, quality, final


# ---------------------------------------------------------------- colour histograms (numpy only)
def _rgb_hist(pixels: np.ndarray) -> np.ndarray:
    q = pixels.astype(np.int64) * RGB_BINS // 256
    idx = (q[..., 0] * RGB_BINS + q[..., 1]) * RGB_BINS + q[..., 2]
    hist = np.bincount(idx.ravel(), minlength=RGB_BINS ** 3).astype(np.float64)
    return hist / hist.sum()


def _hue_hist(pixels: np.ndarray) -> np.ndarray:
    rgb = pixels.astype(np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, spread = rgb.max(-1), np.ptp(rgb, axis=-1)
    d = np.where(spread > 0, spread, 1.0)
    sector = np.where(high == r, (g - b) / d, np.where(high == g, 2 + (b - r) / d, 4 + (r - g) / d))
    degrees = np.where(spread > 0, (sector * 60.0) % 360.0, 0.0)
    idx = np.minimum((degrees * HUE_BINS / 360.0).astype(np.int64), HUE_BINS - 1)
    hist = np.bincount(idx.ravel(), minlength=HUE_BINS).astype(np.float64)
    return hist / hist.sum()


def _correl(a: np.ndarray, b: np.ndarray) -> float:
    """OpenCV's ``HISTCMP_CORREL``: Pearson correlation over bins (1.0 when a histogram is flat)."""
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 1.0


def hist_similarity(generated: Sequence[Image.Image], references: Sequence[Image.Image]) -> float:
    """Mean over ``generated`` of (RGB 16³ + hue 72-bin) correlations with the references' mean histogram."""
    refs = [np.asarray(img.convert("RGB")) for img in references]
    ref_rgb = np.mean([_rgb_hist(p) for p in refs], axis=0)
    ref_hue = np.mean([_hue_hist(p) for p in refs], axis=0)
    scores = []
    for img in generated:
        pixels = np.asarray(img.convert("RGB"))
        scores.append(0.5 * (_correl(_rgb_hist(pixels), ref_rgb) + _correl(_hue_hist(pixels), ref_hue)))
    return float(np.mean(scores))


# ---------------------------------------------------------------- FID (numpy Fréchet distance)
def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` (each N ≥ 2)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def clip_r_hits(similarity: np.ndarray, targets: Sequence[int], top: int = CLIP_R_TOP) -> np.ndarray:
    """Per image (row of ``similarity`` [images, prompts]): is its ``targets`` prompt among the ``top`` best?"""
    best = np.argsort(-np.asarray(similarity), axis=1, kind="stable")[:, :top]
    return np.array([t in row for t, row in zip(targets, best)])


# ---------------------------------------------------------------- model terms (torch, lazy)
def _load_dino(source, device):
    from transformers import AutoImageProcessor, AutoModel

    return AutoModel.from_pretrained(source).eval().to(device), AutoImageProcessor.from_pretrained(source)


def _load_clip(source, device):
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(source).eval().to(device), AutoProcessor.from_pretrained(source)


def _load_lpips(_source, device):
    import lpips

    return (lpips.LPIPS(net="squeeze", verbose=False).eval().to(device),)


def _load_fid(source, device):
    import torch

    return (torch.jit.load(str(source), map_location=device).eval(),)


LOADERS = {"dino": _load_dino, "clip": _load_clip, "lpips": _load_lpips, "fid": _load_fid}
HINTS = {"dino": f"EvalModels.dino, e.g. {DINO_ID}", "clip": f"EvalModels.clip, e.g. {CLIP_ID}",
         "lpips": "EvalModels.lpips=True", "fid": "EvalModels.fid, the file inception-2015-12-05.pt"}
NAMES = {"dino": "DINOv2 weights", "clip": "CLIP weights", "lpips": "LPIPS", "fid": "FID Inception file"}
INSTALL = "pip install torch transformers lpips"


def _what(kind: str, source) -> str:
    """The model as an error names it: its kind and the path (or hub id) it was asked to come from."""
    return NAMES[kind] + ("" if source is True else f" {source}")


@functools.lru_cache(maxsize=None)
def _loaded(kind: str, source, device: str) -> tuple:
    """The models of ``kind``, kept for the process so a set loads each once; a failure is a ModelLoadError."""
    what = _what(kind, source)
    if isinstance(source, str):
        source = os.path.expanduser(source)
        if not Path(source).exists() and (Path(source).is_absolute() or source[:1] == "."):
            raise ModelLoadError(f"{what}: no such file or folder")
    try:
        return LOADERS[kind](source, device)
    except ImportError as exc:
        raise ModelLoadError(f"{what}: package {exc.name or exc} is not installed ({INSTALL})") from exc
    except Exception as exc:  # noqa: BLE001 — whatever the loader raises, the user needs the file and the cause
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelLoadError(f"{what}: could not load ({type(exc).__name__}: {first})") from exc


def _load_all(models: EvalModels) -> Tuple[Dict[str, tuple], Dict[str, str], Optional[str]]:
    """The loaded models of the terms asked for, the reason for each term not asked for, and the torch device."""
    wanted = {"dino": models.dino, "clip": models.clip, "lpips": True if models.lpips else None, "fid": models.fid}
    asked = {kind: source for kind, source in wanted.items() if source is not None}
    reasons = {kind: f"no weights given ({HINTS[kind]})" for kind in wanted if kind not in asked}
    if not asked:
        return {}, reasons, None
    try:
        import torch
    except ImportError as exc:
        needing = ", ".join(_what(kind, source) for kind, source in asked.items())
        raise ModelLoadError(f"{needing}: package torch is not installed ({INSTALL})") from exc
    device = models.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return {kind: _loaded(kind, source, device) for kind, source in asked.items()}, reasons, device


def _batches(images, size: int, desc: str):
    starts = range(0, len(images), size)
    return (images[i:i + size] for i in progress(starts, desc, total=len(starts)))


def _unit(features):
    """L2-normalised rows; accepts a tensor or (transformers 5) an output whose ``pooler_output`` holds them."""
    features = getattr(features, "pooler_output", features)
    return features / features.norm(dim=-1, keepdim=True)


def _pixels(images, size: int) -> np.ndarray:
    """``[N, 3, size, size]`` float32 in 0..255, bicubic resize."""
    arrays = [np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC)) for img in images]
    return np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32)


def _dino(model, processor, generated, references, device, n, desc) -> float:
    import torch

    def embed(images, name):
        with torch.no_grad():
            return torch.cat([_unit(model(pixel_values=processor(images=b, return_tensors="pt")["pixel_values"]
                                          .to(device)).pooler_output) for b in _batches(images, n, name)])

    return float((embed(generated, desc) @ embed(references, desc + " refs").T).mean())


def _clip(model, processor, generated, prompts, targets, device, n, desc) -> Tuple[float, float]:
    """(CLIP-R, CLIP-IQA) from one pass of the image encoder."""
    import torch

    def texts(words):
        tokens = processor(text=list(words), return_tensors="pt", padding=True)
        return _unit(model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                             attention_mask=tokens["attention_mask"].to(device)))

    with torch.no_grad():
        images = torch.cat([_unit(model.get_image_features(
            pixel_values=processor(images=b, return_tensors="pt")["pixel_values"].to(device)))
            for b in _batches(generated, n, desc)])
        hits = clip_r_hits((images @ texts(prompts).T).cpu().numpy(), targets)
        good = (images @ texts(IQA_PROMPTS).T * model.logit_scale.exp()).softmax(dim=-1)[:, 0]
    return float(hits.mean()), float(good.mean())


def _lpips(model, generated, references, device, n, desc) -> float:
    import torch

    refs = torch.from_numpy(_pixels(references, 256) / 127.5 - 1).to(device)
    distances = []
    with torch.no_grad():
        for batch in _batches(generated, n, desc):
            gen = torch.from_numpy(_pixels(batch, 256) / 127.5 - 1).to(device)
            distances += [model(gen, ref.expand_as(gen)).flatten() for ref in refs]
    return float(torch.cat(distances).mean())


def _fid(model, generated, references, device, n, desc) -> float:
    import torch

    def features(images, name):
        with torch.no_grad():
            return np.concatenate([model(torch.from_numpy(_pixels(b, 299)).to(device), return_features=True)
                                   .double().cpu().numpy() for b in _batches(images, n, name)])

    return frechet_distance(features(generated, desc), features(references, desc + " refs"))


def _model_terms(models: EvalModels, generated, references, prompts, targets, style) -> Dict[str, Term]:
    """DINO, LPIPS, CLIP-R, FID and CLIP-IQA: each a value, or the reason it is not computed."""
    loaded, reasons, device = _load_all(models)
    n = models.batch_size
    out = {k: Term.missing(reasons[m]) for k, m in
           (("dino", "dino"), ("lpips", "lpips"), ("fid", "fid"), ("clip_r", "clip"), ("clip_iqa", "clip"))
           if m in reasons}
    if "dino" in loaded:
        out["dino"] = Term(_dino(*loaded["dino"], generated, references, device, n, f"DINOv2 {style}"))
    if "lpips" in loaded:
        out["lpips"] = Term(_lpips(*loaded["lpips"], generated, references, device, n, f"LPIPS {style}"))
    if "fid" in loaded:
        out["fid"] = (Term(_fid(*loaded["fid"], generated, references, device, n, f"FID {style}"))
                      if min(len(generated), len(references)) >= 2
                      else Term.missing("FID needs at least 2 generated and 2 reference images"))
    if "clip" in loaded:
        clip_r, clip_iqa = _clip(*loaded["clip"], generated, prompts, targets, device, n, f"CLIP {style}")
        out["clip_r"], out["clip_iqa"] = Term(clip_r), Term(clip_iqa)
    return out


# ---------------------------------------------------------------- folders → scores
def _image_size(path: Path) -> Tuple[int, int]:
    """The size in the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for unreadable or truncated files
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def _result_files(results_dir: Path, prompt_file: Path, size: int) -> Tuple[List[Tuple[str, Path]], List[str]]:
    """``[(prompt, file)]`` of the results present, in prompt order, and what makes the set incomplete (prompts
    without an image, images not ``size``²). Files map to prompts by :func:`styleblend.data.result_name`; a
    ``.png`` that names no prompt is an error, since it would be scored against no prompt."""
    if not results_dir.is_dir():
        raise DataError(f"{results_dir}: no results folder (expected <results>/<set>/<style>/<Prompt>.png)")
    prompts = list(load_prompts(prompt_file).values())
    named = {result_name(prompt): prompt for prompt in prompts}
    files = sorted(p for p in results_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() == ".png")
    if not files:
        raise DataError(f"{results_dir}: no .png result images")
    unknown = [p.name for p in files if p.name not in named]
    if unknown:
        raise DataError(f"{results_dir}: {', '.join(unknown)} not named after a prompt of {prompt_file}")
    found = {named[p.name]: p for p in files}
    problems = []
    missing = [prompt for prompt in prompts if prompt not in found]
    if missing:
        problems.append(f"no image for {len(missing)} of {len(prompts)} prompts ({', '.join(missing)})")
    sizes = {path.name: _image_size(path) for path in found.values()}
    wrong = [f"{name} is {w}x{h}" for name, (w, h) in sizes.items() if (w, h) != (size, size)]
    if wrong:
        problems.append(f"{', '.join(wrong)}, not {size}x{size}")
    return [(prompt, found[prompt]) for prompt in prompts if prompt in found], problems


def _refuse_incomplete(problems: Dict[Path, List[str]]) -> None:
    """One DataError naming every folder whose result set is incomplete, and what it lacks."""
    bad = [f"{folder}: {'; '.join(found)}" for folder, found in problems.items() if found]
    if bad:
        raise DataError(" | ".join(bad) + " (allow_partial=True, or --allow-partial, scores what is there and "
                        "flags it)")


def evaluate_style(results_dir, style_data_dir, models: EvalModels = EvalModels(), allow_partial: bool = False,
                   size: int = IMAGE_SIZE, toy_judge=None) -> StyleScore:
    """Score one style's generated images (``results_dir``) against its style folder (``style_data_dir``).

    The results must be one ``size``² image per prompt; ``allow_partial`` scores what is there instead and lists
    what is not in the score's ``incomplete``. ``toy_judge`` (:func:`styleblend.toyjudge.load_judge`, for a
    toy-world set) adds the toy terms.
    """
    style_data_dir = Path(style_data_dir)
    data = load_style(style_data_dir.parent, style_data_dir.name)
    results_dir = Path(results_dir)
    files, problems = _result_files(results_dir, style_data_dir / "prompt.json", size)
    if not allow_partial:
        _refuse_incomplete({results_dir: problems})
    prompts = list(data.prompts.values())
    generated = read_images([path for _, path in files])
    references = [ref.image for ref in data.images]
    terms = _model_terms(models, generated, references, prompts, [prompts.index(p) for p, _ in files], data.style)
    terms["hist"] = Term(hist_similarity(generated, references))
    if toy_judge is None:
        terms.update({k: Term.missing("not a toy-world set") for k in TOY_TERMS})
    else:
        from .toyscore import toy_terms

        found = toy_terms(toy_judge, generated, [p for p, _ in files], references, data.style)
        terms.update({k: Term(v) if v is not None else Term.missing(f"{data.style} is not a toy-world style")
                      for k, v in found.items()})
    score = StyleScore(data.style, **{k: terms[k].value for k in TERMS + TOY_TERMS})
    for name, value in zip(AGGREGATES, combine(*(terms[k].value for k in TERMS))):
        setattr(score, name, value)
    score.reasons = {k: t.reason for k, t in terms.items() if t.value is None}
    score.incomplete = problems
    _explain_aggregates(score)
    return score


def _explain_aggregates(score: StyleScore) -> None:
    for name, needs in NEEDS.items():
        if getattr(score, name) is None:
            score.reasons[name] = NOT_COMPUTED + "needs " + ", ".join(k for k in needs if getattr(score, k) is None)
    if score.final is None:
        score.reasons["final"] = NOT_COMPUTED + "needs " + ", ".join(k for k in NEEDS if getattr(score, k) is None)


def mean_score(scores: Sequence[StyleScore], name: str = "mean") -> StyleScore:
    """Every column's mean over the styles (``None`` when any style lacks it); the set's score is ``final``."""
    mean = StyleScore(name)
    for column in TERMS + AGGREGATES + TOY_TERMS:
        values = [getattr(s, column) for s in scores]
        if values and None not in values:
            setattr(mean, column, float(np.mean(values)))
        else:
            lacking = [s.style for s in scores if getattr(s, column) is None]
            why = sorted({s.reasons.get(column, "") for s in scores if getattr(s, column) is None} - {""})
            detail = f" ({'; '.join(why)})" if why else ""
            mean.reasons[column] = NOT_COMPUTED + f"missing for {', '.join(lacking)}{detail}"
    partial = [s.style for s in scores if s.incomplete]
    if partial:
        mean.incomplete = [f"includes incomplete style(s) {', '.join(partial)}"]
    return mean


def evaluate_set(set_name: str, results_root, data_root, styles: Optional[Sequence[str]] = None,
                 models: EvalModels = EvalModels(), out_csv=None, allow_partial: bool = False,
                 size: int = IMAGE_SIZE) -> List[StyleScore]:
    """Score ``<results_root>/<set_name>/<style>/`` for each style (default: every style in ``data_root``).

    Returns one :class:`StyleScore` per style followed by the ``mean`` row (the set's score, mean over styles);
    ``out_csv`` (replaced if present: it is recomputed from the images) gets the same rows. Every style's results
    are checked (see :func:`evaluate_style` for ``allow_partial`` and ``size``) and the models loaded before any
    scoring, so a bad set or model fails at once, not after hours.
    """
    set_dir = Path(results_root) / set_name
    if not set_dir.is_dir():
        raise DataError(f"{set_dir}: no results folder for set {set_name!r}")
    styles = list(styles) if styles else list_styles(data_root)
    if not styles:
        raise DataError(f"{data_root}: no style folders (<style>/images)")
    missing = [s for s in styles if not (set_dir / s).is_dir()]
    if missing:
        raise DataError(f"{set_dir}: no result folder for style(s) {', '.join(missing)}")
    problems = {set_dir / s: _result_files(set_dir / s, Path(data_root) / s / "prompt.json", size)[1] for s in styles}
    if not allow_partial:
        _refuse_incomplete(problems)
    _load_all(models)
    judge_net = None
    if is_toy_set(data_root):
        from .toyjudge import load_judge

        judge_net = load_judge()
    scores = [evaluate_style(set_dir / s, Path(data_root) / s, models, allow_partial, size, judge_net)
              for s in progress(styles, f"evaluate {set_name}")]
    scores.append(mean_score(scores))
    if out_csv is not None:
        write_csv(scores, out_csv)
    return scores


# ---------------------------------------------------------------- CSV and table
def _cell(value) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(float(value))


def _columns(scores: Sequence[StyleScore]) -> Tuple[str, ...]:
    """The challenge's columns, then the toy terms that some row has."""
    return CHALLENGE_COLUMNS + tuple(c for c in TOY_TERMS if any(getattr(s, c) is not None for s in scores))


def scores_file(outputs, set_name: str) -> Path:
    """Where a run keeps its set's scores: ``<outputs>/scores/<set>.csv`` (notebook 06 writes it, the gallery reads
    it)."""
    return Path(outputs) / "scores" / f"{set_name}.csv"


def write_csv(scores: Sequence[StyleScore], path) -> Path:
    """The rows as CSV (:func:`_columns`), empty cells where a value was not computed."""
    columns = _columns(scores)
    buffer = _stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(getattr(s, c)) for c in columns] for s in scores)
    return write_atomic(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"), overwrite=True)


def read_csv(path) -> List[StyleScore]:
    """Rows written by :func:`write_csv`, or with the challenge's columns only (reasons are not stored: an empty
    cell reads as not computed)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = tuple(rows[0]) if rows else ()
    if header[:len(CHALLENGE_COLUMNS)] != CHALLENGE_COLUMNS or not set(header) <= set(COLUMNS):
        raise DataError(f"{path}: not a score CSV (header must be {','.join(CHALLENGE_COLUMNS)}, then toy terms)")
    scores = []
    for row in rows[1:]:
        values = {c: (float(v) if v else None) for c, v in zip(rows[0][1:], row[1:])}
        reasons = {c: NOT_COMPUTED + f"empty in {path.name}" for c, v in values.items() if v is None}
        scores.append(StyleScore(row[0], reasons=reasons, **values))
    return scores


def markdown_table(scores: Sequence[StyleScore]) -> str:
    """A Markdown table of the rows ("—" = not computed; "(incomplete)" after a style scored on a partial result
    set), then what each incomplete style lacks and the distinct reasons for missing terms. The toy terms appear
    when some row has them."""
    columns = _columns(scores)
    toy = columns[len(CHALLENGE_COLUMNS):]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in scores:
        cells = [s.style + (" (incomplete)" if s.incomplete else "")]
        cells += ["—" if getattr(s, c) is None else f"{getattr(s, c):.4f}" for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{s.style} incomplete: {problem}" for s in scores if s.style != "mean" for problem in s.incomplete]
    notes += sorted({f"{c}: {s.reasons[c]}" for s in scores if s.style != "mean" for c in TERMS + toy
                     if c in s.reasons})
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))


__all__ = ["IMAGE_SIZE", "Term", "StyleScore", "EvalModels", "combine", "hist_similarity", "frechet_distance",
           "clip_r_hits", "evaluate_style", "evaluate_set", "mean_score", "scores_file", "write_csv", "read_csv",
           "markdown_table", "COLUMNS"]
