"""The fine style (StyleBlend's second branch): textual inversion of ``<F>``, then a UNet LoRA.

Both stages train on the reference images themselves (random horizontal flips) with the prompt
"A {caption} in the style of <F>.", as the original implementation does:

1. textual inversion — a copy of the text encoder gets ``<F>`` (a copy of "artistic"'s row), and AdamW trains
   that row alone (:meth:`CLIPTextModel.trainable_row`). The original gives AdamW the whole token table and
   puts every other row back after each step: the same update, with a gradient and optimizer state of the
   table's size. The learning rate is multiplied by ``ti_decay`` every ``ti_decay_every`` steps.
2. UNet LoRA — the text encoder (and ``<F>``) are frozen; rank-``lora_rank`` LoRA on ``to_q``/``to_k``/
   ``to_v``/``to_out.0`` of every UNet attention layer, learning rate halved every ``lora_halve_every`` steps.

:func:`train_fine` leaves ``sd`` behaving as before (its LoRA layers are put back as they were);
:func:`load_fine` installs a style's ``<F>`` row in ``sd.text_encoder`` and its LoRA in ``sd.unet``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import ImageOps

from .backend import jt

from .checkpoints import STAGE_FILES, StyleCheckpoint
from .config import FineConfig, format_prompt
from .data import StyleData
from .sd.models.lora import (add_lora, load_lora_state_dict, lora_layers, lora_multiplier, lora_parameters,
                             lora_state_dict, remove_lora)
from .sd.sampling import encode_prompt
from .sd.tokens import add_token, set_token_row
from .training import (denoising_loss, encode_moments, epoch_order, fit, loss_scale, plain_config, sample_latents,
                       seed_lora)


@dataclass
class FineResult:
    """What :func:`train_fine` did: losses of both stages, the files written, the text encoder holding ``<F>``."""
    ti_losses: List[float]
    lora_losses: List[float]
    files: List[Path]
    text_encoder: object


def gaussian_std(rank: int, in_features: int) -> float:
    """The UNet LoRA's down-matrix init (peft's ``"gaussian"``, as the original): ``N(0, 1/rank²)``."""
    return 1.0 / rank


def prepare_unet_lora(unet, cfg: FineConfig, rng: np.random.Generator) -> None:
    """Give ``unet`` a fresh, seeded LoRA on ``cfg.lora_targets``, reusing its LoRA layers if it has them."""
    if any(layer.rank != cfg.lora_rank for layer in lora_layers(unet).values()):
        remove_lora(unet)  # a loaded style's LoRA of another rank
    if not lora_layers(unet):
        add_lora(unet, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
    for layer in lora_layers(unet).values():
        layer.alpha = float(cfg.lora_alpha)
    seed_lora(unet, rng, gaussian_std)


def train_fine(sd, style_data: StyleData, cfg: FineConfig, ckpt: StyleCheckpoint, seed: int,
               force: bool = False, staged: bool = False) -> FineResult:
    """Textual inversion of ``cfg.token``, then the UNet LoRA; saves the row, the LoRA and the config.

    Each step takes ``cfg.batch_size`` reference images (shuffled passes), each flipped with probability
    0.5 when ``cfg.flip``, its latent sampled afresh from the VAE posterior. Existing output files are
    refused before any work unless ``force``. ``staged``: gradients one UNet stage at a time.
    """
    ckpt.check_writable(STAGE_FILES["fine"], force)
    rng = np.random.default_rng(seed)
    images = [item.image for item in style_data.images]
    flipped = [ImageOps.mirror(image) for image in images] if cfg.flip else []
    moments = encode_moments(sd, images + flipped, cfg.resolution)
    prompts = [format_prompt(cfg.prompt_template, caption=item.caption, token=cfg.token) for item in style_data.images]

    def batches(steps: int):
        order = epoch_order(rng, len(images), steps * cfg.batch_size).reshape(steps, cfg.batch_size)
        flips = (rng.random(order.shape) < 0.5) if cfg.flip else np.zeros(order.shape, bool)
        return order, np.where(flips, order + len(images), order)

    text_encoder = sd.text_encoder.clone()
    token_id = add_token(sd.tokenizer, text_encoder, cfg.token, cfg.init_token)
    order, variant = batches(cfg.ti_steps)

    def ti_loss(step: int) -> jt.Var:
        context = encode_prompt(sd, [prompts[i] for i in order[step]], text_encoder)
        latents = sample_latents(sd, [moments[v] for v in variant[step]], rng)
        return denoising_loss(sd, latents, context, rng, staged)

    saved_lora = _snapshot_lora(sd.unet)
    with lora_multiplier(sd.unet, 0.0), text_encoder.trainable_row(token_id) as row:
        ti_losses = fit([row], ti_loss, cfg.ti_steps, cfg.ti_lr, cfg.ti_betas, cfg.weight_decay, cfg.eps,
                        desc=f"textual inversion {cfg.token}", scale=loss_scale(sd),
                        lr_factor=lambda s: cfg.ti_decay ** (s // cfg.ti_decay_every))

    with jt.no_grad():  # the text encoder is frozen from here on: one context per caption
        contexts = encode_prompt(sd, prompts, text_encoder).numpy()
    prepare_unet_lora(sd.unet, cfg, rng)
    order, variant = batches(cfg.lora_steps)

    def lora_loss(step: int) -> jt.Var:
        latents = sample_latents(sd, [moments[v] for v in variant[step]], rng)
        return denoising_loss(sd, latents, jt.array(contexts[order[step]]), rng, staged)

    try:
        with lora_multiplier(sd.unet, 1.0):
            lora_losses = fit(lora_parameters(sd.unet), lora_loss, cfg.lora_steps, cfg.lora_lr, cfg.lora_betas,
                              cfg.weight_decay, cfg.eps, desc="fine style UNet LoRA",
                              lr_factor=lambda s: 0.5 ** (s // cfg.lora_halve_every), scale=loss_scale(sd))
        row = text_encoder.token_embedding_weight[token_id].numpy()
        files = [ckpt.save_embedding("fine_embeds", cfg.token, cfg.init_token, row, force),
                 ckpt.save_lora("unet_lora", sd.unet, cfg.lora_targets, force),
                 ckpt.save_config_section("fine", plain_config(cfg), seed)]
    finally:
        _restore_lora(sd.unet, saved_lora)
    return FineResult(ti_losses, lora_losses, files, text_encoder)


def load_fine(sd, ckpt: StyleCheckpoint) -> int:
    """Install ``ckpt``'s fine style in ``sd``: its ``<F>`` row in ``sd.text_encoder`` and its LoRA in
    ``sd.unet`` (added if absent, else reloaded). Loading another style later replaces both. Returns the
    token's id."""
    token, row = ckpt.load_embedding("fine_embeds")
    token_id = set_token_row(sd.tokenizer, sd.text_encoder, token, row)
    ckpt.load_lora("unet_lora", sd.unet)
    return token_id


def _snapshot_lora(unet) -> Tuple[dict, dict]:
    """``unet``'s LoRA matrices (numpy) and alphas, to put back after training."""
    alphas = {name: layer.alpha for name, layer in lora_layers(unet).items()}
    return {name: var.numpy() for name, var in lora_state_dict(unet).items()}, alphas


def _restore_lora(unet, snapshot: Tuple[dict, dict]) -> None:
    """Put ``unet``'s LoRA back as in ``snapshot``; LoRA layers that were not there before become no-ops."""
    weights, alphas = snapshot
    if weights and any(k not in weights or tuple(weights[k].shape) != tuple(v.shape)
                       for k, v in lora_state_dict(unet).items()):
        remove_lora(unet)  # training replaced a LoRA of another rank; load_fine adds a style's LoRA again
        return
    if weights:
        load_lora_state_dict(unet, weights)
        for name, layer in lora_layers(unet).items():
            layer.alpha = alphas[name]
        return
    for layer in lora_layers(unet).values():
        layer.lora_up.weight.assign(jt.zeros(tuple(layer.lora_up.weight.shape), layer.lora_up.weight.dtype))
