"""The coarse style ``<C>``: a text-encoder LoRA trained on the SDEdit images (:mod:`styleblend.sdedit`).

:func:`train_coarse` — a copy of the text encoder gets the token ``<C>`` (a copy of ``&``'s row) and a LoRA on
every self-attention projection; only the LoRA is optimised (the original leaves ``<C>`` at its initial
embedding), so that "A {caption} in the style of <C>." denoises to the SDEdit images: the encoder learns the
style's composition, not its texture. UNet and VAE stay frozen.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from .backend import jt

from .checkpoints import STAGE_FILES, StyleCheckpoint
from .config import CoarseConfig, format_prompt
from .data import StyleData, coarse_caption, read_images
from .errors import DataError
from .sd.models.lora import add_lora, lora_multiplier, lora_parameters
from .sd.sampling import encode_prompt
from .sd.tokens import add_token, set_token_row
from .sdedit import SDEditResult
from .training import (denoising_loss, encode_moments, epoch_order, fit, loss_scale, plain_config, sample_latents,
                       seed_lora)

@dataclass
class CoarseResult:
    """What :func:`train_coarse` did: the loss of every step, the files written, the trained text encoder."""
    losses: List[float]
    files: List[Path]
    text_encoder: object


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
                 ckpt: StyleCheckpoint, seed: int, force: bool = False, staged: bool = False) -> CoarseResult:
    """Train the coarse style on the SDEdit images and save ``<C>``'s row, the LoRA and the config.

    Each step takes ``cfg.batch_size`` subjects (shuffled passes over the captions cut at ``-``,
    :func:`styleblend.data.coarse_caption`), one kept SDEdit image of each (its latent sampled once, as the
    original pre-encodes them) and the prompt ``cfg.prompt_template``. Existing output files are refused before
    any work unless ``force``. ``staged``: gradients one UNet stage at a time (:func:`denoising_loss`).
    """
    ckpt.check_writable(STAGE_FILES["coarse"], force)
    kept = sdedit.kept if isinstance(sdedit, SDEditResult) else sdedit
    missing = sorted({item.caption for item in style_data.images if not kept.get(item.caption)})
    if missing:
        raise DataError(f"{style_data.folder}: no SDEdit images for {missing}; run build_sdedit_data first")
    pooled: Dict[str, List[Path]] = {}  # SDEdit images by subject: "cat-2" and "cat-3" are one "cat"
    for caption in dict.fromkeys(item.caption for item in style_data.images):
        pooled.setdefault(coarse_caption(caption), []).extend(kept[caption])
    captions = list(pooled)
    rng = np.random.default_rng(seed)
    text_encoder = coarse_text_encoder(sd, cfg, rng)
    latents = {c: [sample_latents(sd, [m], rng) for m in encode_moments(sd, read_images(pooled[c]), cfg.resolution)]
               for c in captions}
    prompts = [format_prompt(cfg.prompt_template, caption=c, token=cfg.token) for c in captions]
    order = epoch_order(rng, len(captions), cfg.steps * cfg.batch_size).reshape(cfg.steps, cfg.batch_size)

    def loss_at(step: int) -> jt.Var:
        picks = order[step]
        batch = jt.concat([latents[captions[i]][rng.integers(len(latents[captions[i]]))] for i in picks])
        context = encode_prompt(sd, [prompts[i] for i in picks], text_encoder)
        return denoising_loss(sd, batch, context, rng, staged)

    with lora_multiplier(sd.unet, 0.0):
        losses = fit(lora_parameters(text_encoder), loss_at, cfg.steps, cfg.lr, cfg.betas, cfg.weight_decay,
                     cfg.eps, desc="coarse style", scale=loss_scale(sd))
    row = text_encoder.token_embedding_weight[sd.tokenizer.convert_tokens_to_ids(cfg.token)].numpy()
    files = [ckpt.save_embedding("coarse_embeds", cfg.token, cfg.init_token, row, force),
             ckpt.save_lora("text_encoder_lora", text_encoder, cfg.lora_targets, force),
             ckpt.save_config_section("coarse", plain_config(cfg), seed)]
    return CoarseResult(losses, files, text_encoder)


def load_coarse(sd, ckpt: StyleCheckpoint):
    """The coarse-style text encoder of ``ckpt``: a copy of ``sd.text_encoder`` with ``<C>`` and the LoRA loaded."""
    token, row = ckpt.load_embedding("coarse_embeds")
    text_encoder = sd.text_encoder.clone()
    set_token_row(sd.tokenizer, text_encoder, token, row)
    ckpt.load_lora("text_encoder_lora", text_encoder)
    return text_encoder
