"""The coarse style (StyleBlend's first branch): SDEdit training data, then a text-encoder LoRA and ``<C>``.

1. :func:`build_sdedit_data` — each reference image is pushed through SDEdit towards "A {caption},
   realistic." several times; the candidates keep the image's layout but lose its rendering, and the
   best ``keep`` of them (by a selector, else a seeded random subset) become the training targets.
2. :func:`train_coarse` — a copy of the text encoder gets the token ``<C>`` (a copy of ``&``'s row) and a
   LoRA on every self-attention projection; only the LoRA is optimised (the original leaves ``<C>`` at its
   initial embedding), so that "A {caption} in the style of <C>." denoises to the SDEdit images: the
   encoder learns the style's composition, not its texture. UNet and VAE stay frozen.

The training helpers here (:func:`fit`, :func:`denoising_loss`, latents, LoRA seeding) are shared with
:mod:`styleblend.fine`. Every random draw comes from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .backend import jt

from .checkpoints import STAGES, StyleCheckpoint
from .config import CoarseConfig, SDEditConfig, format_prompt
from .data import StyleData
from .errors import DataError, ModelLoadError
from .io import save_image
from .models.lora import add_lora, lora_layers, lora_parameters, set_lora_multiplier
from .models.stages import Stage, StagedLoss, inner, run_stages, staged_grads
from .progress import progress
from .sampling import encode_prompt, image_to_image, to_tensor
from .tokens import add_token, set_token_row

Selector = Callable[[Image.Image, List[Image.Image]], Sequence[float]]
Moments = Tuple[np.ndarray, np.ndarray]  # VAE posterior mean and std of one image, [1, 4, h, w]
FLOAT16_LOSS_SCALE = 1024.0  # float16 UNet weights: loss multiplier for the backward pass (see loss_scale)


@dataclass
class SDEditResult:
    """SDEdit data of a style: kept files per caption, the candidates made by this call, their scores."""
    kept: Dict[str, List[Path]]
    candidates: Dict[str, List[Image.Image]] = field(default_factory=dict)
    scores: Dict[str, List[float]] = field(default_factory=dict)
    note: str = ""


@dataclass
class TrainResult:
    """What :func:`train_coarse` did: the loss of every step, the files written, the trained text encoder."""
    losses: List[float]
    files: List[Path]
    text_encoder: object


# ---- SDEdit data ---------------------------------------------------------------------------------------

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
    with unet_lora_scale(sd.unet, 0.0):
        for item in progress(style_data.images, desc="SDEdit"):
            # drawn for every image, so a resumed run makes the same choices as a fresh one
            strengths = rng.choice(np.asarray(cfg.strengths, dtype=np.float64), size=cfg.candidates)
            seeds = rng.integers(0, 2**31 - 1, size=cfg.candidates)
            random_pick = rng.permutation(cfg.candidates)[: cfg.keep]
            files = [out_dir / f"{item.path.stem}-{k:03d}.png" for k in range(cfg.keep)]
            result.kept.setdefault(item.caption, []).extend(files)
            if not force and all(f.is_file() for f in files):
                reused += 1
                continue
            reference = item.image.resize((cfg.resolution, cfg.resolution), Image.LANCZOS)
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
                     "image (the original ranked them by CLIP ViT-L/14 patch-token similarity, or by hand)")
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


# ---- training helpers (shared with styleblend.fine) ------------------------------------------------------

def encode_moments(sd, images: Sequence[Image.Image], size: int) -> List[Moments]:
    """VAE posterior (mean, std) of each image resized to ``size``, one image at a time, as numpy."""
    moments = []
    with jt.no_grad():
        for image in progress(images, desc="encoding images"):
            posterior = sd.vae.encode(to_tensor([image], size))
            moments.append((posterior.mean.numpy(), posterior.std.numpy()))
    return moments


def sample_latents(sd, moments: Sequence[Moments], rng: np.random.Generator) -> jt.Var:
    """One posterior sample per entry, scaled as the UNet sees latents: ``[len(moments), 4, h, w]``."""
    draws = [mean + std * rng.standard_normal(mean.shape, dtype=np.float32) for mean, std in moments]
    return jt.array(np.concatenate(draws) * np.float32(sd.vae.config["scaling_factor"]))


def denoising_loss(sd, latents: jt.Var, context: jt.Var, rng: np.random.Generator,
                   staged: bool = False) -> Union[jt.Var, StagedLoss]:
    """MSE between the UNet's prediction and the scheduler's target at uniform random timesteps and noise.

    ``staged``: the loss as a :class:`StagedLoss` (UNet stages + the MSE), which :func:`fit` differentiates one
    stage at a time (less memory, one more forward pass); else the loss itself.
    """
    t = sd.scheduler.sample_timesteps(latents.shape[0], rng)
    noise = jt.array(rng.standard_normal(tuple(latents.shape), dtype=np.float32))
    inputs = sd.unet.stage_inputs(sd.scheduler.add_noise(latents, noise, t).stop_grad(), t, context)
    inputs["target"] = sd.scheduler.training_target(latents, noise, t).float32().stop_grad()
    mse = Stage(lambda out, target: (jt.nn.mse_loss(out.float32(), target),), ("out", "target"), ("loss",))
    loss = StagedLoss(sd.unet.stages() + [mse], inputs)
    return loss if staged else run_stages(loss.stages, loss.inputs)[loss.output]


def loss_scale(sd) -> float:
    """The loss scale for training through ``sd``'s UNet: 1 with float32 weights, :data:`FLOAT16_LOSS_SCALE` with
    float16 ones (a mean over 4×96×96 latents puts the backward's float16 gradients near float16's smallest
    normal number, 6e-5)."""
    return FLOAT16_LOSS_SCALE if sd.unet.dtype == "float16" else 1.0


def fit(params: List[jt.Var], loss_fn: Callable[[int], Union[jt.Var, StagedLoss]], steps: int, lr: float, betas,
        weight_decay: float, eps: float, desc: str, lr_factor: Callable[[int], float] = lambda step: 1.0,
        scale: float = 1.0) -> List[float]:
    """AdamW on ``params`` for ``steps`` steps of ``loss_fn(step)``; step ``s`` uses ``lr * lr_factor(s)``.

    ``loss_fn`` returns the loss, or a :class:`StagedLoss` to be differentiated one stage at a time.
    ``scale`` (:func:`loss_scale`) multiplies the loss before the backward pass; AdamW's step with gradients and
    ``eps`` both multiplied by it is the same step, so nothing is unscaled. Returns the (unscaled) loss of every
    step.
    """
    optimizer = jt.optim.AdamW(params, lr=lr, eps=eps * scale, betas=tuple(betas), weight_decay=weight_decay)
    losses = []
    bar = progress(range(steps), desc=desc)
    for step in bar:
        optimizer.lr = lr * lr_factor(step)
        loss, backward_target = _backward_target(loss_fn(step), params, scale)
        optimizer.step(backward_target)
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def _backward_target(objective: Union[jt.Var, StagedLoss], params: List[jt.Var], scale: float):
    """``(loss, a scalar whose gradient with respect to params is scale × the loss's)``: the scaled loss, or for
    a :class:`StagedLoss` ``Σ ⟨p, g⟩`` over the gradients :func:`staged_grads` computed."""
    if not isinstance(objective, StagedLoss):
        return objective, objective * scale
    loss, grads = staged_grads(objective.stages, objective.inputs, objective.output, params, scale)
    return loss, inner(params, grads)


def epoch_order(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` indices into ``n`` items in shuffled passes over all of them, like a shuffling data loader."""
    passes = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]


def seed_lora(model, rng: np.random.Generator, std: Callable[[int, int], float]) -> None:
    """Start every LoRA layer of ``model`` afresh: ``down ~ N(0, std(rank, in_features)²)``, ``up = 0``."""
    for layer in lora_layers(model).values():
        down, up = layer.lora_down.weight, layer.lora_up.weight
        rank, in_features = down.shape
        values = rng.standard_normal((rank, in_features), dtype=np.float32) * np.float32(std(rank, in_features))
        down.assign(jt.array(values))
        up.assign(jt.zeros(tuple(up.shape), up.dtype))


@contextmanager
def unet_lora_scale(unet, scale: float):
    """Run a block with every UNet LoRA layer at multiplier ``scale`` (0: the base model), then restore them."""
    layers = lora_layers(unet)
    before = {name: layer.multiplier for name, layer in layers.items()}
    set_lora_multiplier(unet, scale)
    try:
        yield
    finally:
        for name, layer in layers.items():
            layer.multiplier = before[name]


def plain_config(cfg) -> dict:
    """A config dataclass as YAML-ready plain values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


# ---- coarse style ----------------------------------------------------------------------------------------

def kaiming_std(rank: int, in_features: int) -> float:
    """The original's init of the coarse LoRA's down matrix: Kaiming normal (fan-in, gain √2)."""
    return float(np.sqrt(2.0 / in_features))


def coarse_text_encoder(sd, cfg: CoarseConfig, rng: np.random.Generator):
    """A copy of ``sd.text_encoder`` with the token ``cfg.token`` and a fresh, seeded LoRA on ``cfg.lora_targets``."""
    text_encoder = sd.text_encoder.clone()
    add_token(sd.tokenizer, text_encoder, cfg.token, cfg.init_token)
    add_lora(text_encoder, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
    seed_lora(text_encoder, rng, kaiming_std)
    return text_encoder


def train_coarse(sd, style_data: StyleData, sdedit: Union[SDEditResult, Dict[str, List[Path]]], cfg: CoarseConfig,
                 ckpt: StyleCheckpoint, seed: int, force: bool = False, staged: bool = False) -> TrainResult:
    """Train the coarse style on the SDEdit images and save ``<C>``'s row, the LoRA and the config.

    Each step takes ``cfg.batch_size`` captions (shuffled passes over the style's images), one kept SDEdit
    image of each (its latent sampled once, as the original pre-encodes them) and the prompt
    ``cfg.prompt_template``. Existing output files are refused before any work unless ``force``. ``staged``:
    gradients one UNet stage at a time (:func:`denoising_loss`).
    """
    ckpt.check_writable(STAGES["coarse"], force)
    kept = sdedit.kept if isinstance(sdedit, SDEditResult) else sdedit
    captions = list(dict.fromkeys(item.caption for item in style_data.images))
    missing = [c for c in captions if not kept.get(c)]
    if missing:
        raise DataError(f"{style_data.folder}: no SDEdit images for {missing}; run build_sdedit_data first")
    rng = np.random.default_rng(seed)
    text_encoder = coarse_text_encoder(sd, cfg, rng)
    latents = {c: [sample_latents(sd, [m], rng) for m in encode_moments(sd, _read_images(kept[c]), cfg.resolution)]
               for c in captions}
    prompts = [format_prompt(cfg.prompt_template, caption=c, token=cfg.token) for c in captions]
    order = epoch_order(rng, len(captions), cfg.steps * cfg.batch_size).reshape(cfg.steps, cfg.batch_size)

    def loss_at(step: int) -> jt.Var:
        picks = order[step]
        batch = jt.concat([latents[captions[i]][rng.integers(len(latents[captions[i]]))] for i in picks])
        context = encode_prompt(sd, [prompts[i] for i in picks], text_encoder)
        return denoising_loss(sd, batch, context, rng, staged)

    with unet_lora_scale(sd.unet, 0.0):
        losses = fit(lora_parameters(text_encoder), loss_at, cfg.steps, cfg.lr, cfg.betas, cfg.weight_decay,
                     cfg.eps, desc="coarse style", scale=loss_scale(sd))
    row = text_encoder.token_embedding_weight[sd.tokenizer.convert_tokens_to_ids(cfg.token)].numpy()
    files = [ckpt.save_embedding("coarse_embeds", cfg.token, cfg.init_token, row, force),
             ckpt.save_lora("text_encoder_lora", text_encoder, cfg.lora_targets, force),
             ckpt.save_config_section("coarse", plain_config(cfg), seed)]
    return TrainResult(losses, files, text_encoder)


def load_coarse(sd, ckpt: StyleCheckpoint):
    """The coarse-style text encoder of ``ckpt``: a copy of ``sd.text_encoder`` with ``<C>`` and the LoRA loaded."""
    token, row = ckpt.load_embedding("coarse_embeds")
    text_encoder = sd.text_encoder.clone()
    set_token_row(sd.tokenizer, text_encoder, token, row)
    ckpt.load_lora("text_encoder_lora", text_encoder)
    return text_encoder


def _read_images(paths: Sequence[Path]) -> List[Image.Image]:
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{path}: not a readable SDEdit image ({exc})") from exc
    return images
