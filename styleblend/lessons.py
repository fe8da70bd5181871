"""Small demonstrations the notebooks show: a model summary, the denoising trajectory, an SDEdit strength grid,
LoRA's parameter count, before/after samples, StyleBlend ablations and parameter sweeps.

They exist for teaching: each calls the package's real functions (sampling, blend, coarse, fine) and returns
images or numbers for a figure or a table, so the notebooks themselves hold no logic.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .backend import jt

from .blend import BlendOutput, blend_sample, load_style_weights
from .sdedit import SDEditResult
from .config import BlendConfig, BlendParams
from .data import list_styles, read_images
from .errors import DataError
from .sd.models.attention import hooks_installed
from .sd.models.lora import lora_multiplier
from .pretrain import CURVES_FILE
from .progress import progress
from .sd.sampling import (MAX_TOKENS, decode_latents, image_to_image, initial_latents, latent_factor, text_to_image,
                       to_pil)

ABLATIONS = {"csb": "CSB only", "fsb": "FSB only", "q_only": "Q injection only", "kv_only": "KV injection only",
             "full": "StyleBlend (full)"}


def parameter_count(module) -> int:
    """Number of parameters of a Jittor module."""
    return int(sum(np.prod(p.shape) for p in module.parameters()))


def model_summary(sd) -> str:
    """A Markdown table of a Stable Diffusion model's parts: parameters and the facts that shape sampling."""
    te, unet, vae, sched = sd.text_encoder.config, sd.unet.config, sd.vae.config, sd.scheduler.config
    rows = [
        ("text encoder (CLIP)", parameter_count(sd.text_encoder),
         f"{te['num_hidden_layers']} layers, width {te['hidden_size']}, {te['max_position_embeddings']} tokens"),
        ("UNet", parameter_count(sd.unet),
         f"channels {unet['block_out_channels']}, {len(sd.unet.transformer_blocks())} transformer blocks, "
         f"text width {unet['cross_attention_dim']}"),
        ("VAE", parameter_count(sd.vae),
         f"image ÷{latent_factor(sd)} per side → {vae['latent_channels']} latent channels, "
         f"scaling {vae['scaling_factor']}"),
        ("scheduler (DDIM)", 0,
         f"{sched['num_train_timesteps']} training steps, {sched['beta_schedule']} betas, "
         f"predicts {sched['prediction_type']}"),
    ]
    lines = ["| part | parameters | what matters |", "|---|---:|---|"]
    lines += [f"| {name} | {n:,} | {text} |" if n else f"| {name} | — | {text} |" for name, n, text in rows]
    return "\n".join(lines)


def pretraining_curves(model_folder) -> Optional[Dict[str, List[float]]]:
    """The loss of every step of the model's pretraining by this project (``styleblend pretrain-toy``), per stage;
    None for a model pretrained elsewhere (SD 2.1) or never trained (the tiny random model)."""
    path = Path(model_folder) / CURVES_FILE
    if not path.exists():
        return None
    curves = json.loads(path.read_text(encoding="utf-8"))
    return {"VAE": curves["vae"], "text encoder + UNet": curves["denoiser"]}


@dataclass
class Trajectory:
    """A text-to-image run: the final image and the clean image predicted (x̂₀) at some of its steps."""
    image: Image.Image
    frames: List[Image.Image]
    titles: List[str]


def denoising_trajectory(sd, prompt: str, steps: int, seed: int, size: int, negative_prompt: str = "",
                         guidance: float = 7.5, frames: int = 6) -> Trajectory:
    """Sample ``prompt`` and decode the predicted x̂₀ at ``frames`` evenly spaced steps (first and last included)."""
    keep = set(np.linspace(0, steps - 1, min(frames, steps)).round().astype(int).tolist())
    seen = []

    def record(i, t, latents, x0):
        if i in keep:
            seen.append((i, t, x0))

    image = text_to_image(sd, prompt, negative_prompt, steps, guidance, size, size, seed, callback=record)[0]
    with jt.no_grad():
        decoded = to_pil(decode_latents(sd, jt.concat([x0 for _, _, x0 in seen])))
    titles = [f"step {i + 1}/{steps}\nt = {t}" for i, t, _ in seen]
    return Trajectory(image, decoded, titles)


def strength_grid(sd, image: Image.Image, prompt: str, strengths: Sequence[float], steps: int, seed: int,
                  size: int, negative_prompt: str = "", guidance: float = 7.5) -> List[Image.Image]:
    """SDEdit of one image at each strength (same noise): low keeps the image, high follows the prompt."""
    return [image_to_image(sd, [image], prompt, negative_prompt, strength=s, steps=steps, guidance=guidance,
                           seed=seed, size=size)[0] for s in progress(strengths, desc="strengths")]


@dataclass
class LoRACount:
    """What a LoRA of rank ``rank`` on the ``targets`` layers adds, next to what it adapts."""
    layers: int
    adapted: int   # parameters of the targeted weight matrices
    lora: int      # parameters of the LoRA matrices A and B
    model: int     # parameters of the whole model

    def markdown(self) -> str:
        return ("| layers adapted | their weights | LoRA (A and B) | whole model | LoRA / model |\n"
                "|---:|---:|---:|---:|---:|\n"
                f"| {self.layers} | {self.adapted:,} | {self.lora:,} | {self.model:,} | "
                f"{self.lora / self.model:.3%} |")


def lora_parameter_count(model, targets: Sequence[str], rank: int) -> LoRACount:
    """Count the weights a rank-``rank`` LoRA on the layers named ``targets`` would train (the model is not
    changed): a ``d_out × d_in`` weight gets ``B`` (``d_out × rank``) and ``A`` (``rank × d_in``)."""
    shapes = [tuple(m.weight.shape) for name, m in model.named_modules()
              if any(name == t or name.endswith("." + t) for t in targets)
              and getattr(m, "weight", None) is not None and len(m.weight.shape) == 2]
    if not shapes:
        raise ValueError(f"no weight matrix named any of {list(targets)} in {type(model).__name__}")
    return LoRACount(len(shapes), sum(o * i for o, i in shapes), sum(rank * (o + i) for o, i in shapes),
                     parameter_count(model))


def samples(sd, prompts: Sequence[str], steps: int, size: int, seed: int, guidance: float = 7.5,
            negative_prompt: str = "", text_encoder=None, unet_lora: Optional[float] = None) -> List[Image.Image]:
    """One image per prompt from the same seed, optionally through another ``text_encoder`` (e.g. the coarse
    one) and with the UNet LoRA at multiplier ``unet_lora`` (0 = switched off)."""
    model = sd if text_encoder is None else replace(sd, text_encoder=text_encoder)
    with lora_multiplier(sd.unet, unet_lora) if unet_lora is not None else nullcontext():
        return text_to_image(model, list(prompts), negative_prompt, steps, guidance, size, size, seed)


def sdedit_table(result: SDEditResult) -> Tuple[List[List[Image.Image]], List[str], List[Tuple[int, int]]]:
    """Rows of SDEdit candidates per caption, the captions, and the (row, column) of each kept candidate
    (found by comparing pixels with the saved files). Captions whose files were reused show the kept files."""
    rows, marked = [], []
    for r, (caption, files) in enumerate(result.kept.items()):
        kept = read_images(files)
        candidates = result.candidates.get(caption)
        if not candidates:
            rows.append(kept)
            marked += [(r, c) for c in range(len(kept))]
            continue
        rows.append(candidates)
        kept_pixels = [np.asarray(k) for k in kept]
        marked += [(r, c) for c, cand in enumerate(candidates)
                   if any(np.array_equal(np.asarray(cand), k) for k in kept_pixels)]
    return rows, list(result.kept), marked


def ablation_panel(sd, coarse_text_encoder, prompt: str, params: BlendParams, cfg: BlendConfig, seed: int,
                   modes: Sequence[str] = tuple(ABLATIONS), **tokens) -> Dict[str, BlendOutput]:
    """Both branches' images of ``prompt`` under each StyleBlend ``mode`` (same seed), keyed by a readable name."""
    return {ABLATIONS.get(mode, mode): blend_sample(sd, coarse_text_encoder, prompt, params, cfg, seed, mode=mode,
                                                     **tokens)
            for mode in progress(modes, desc="ablations")}


def vary(params: BlendParams, name: str, values: Sequence) -> Dict[str, BlendParams]:
    """Copies of ``params`` with field ``name`` set to each of ``values``, keyed ``"name = value"``."""
    return {f"{name} = {value}": replace(params, **{name: value}) for value in values}


def parameter_sweep(sd, coarse_text_encoder, prompt: str, variants: Dict[str, BlendParams], cfg: BlendConfig,
                    seed: int, **tokens) -> Dict[str, Image.Image]:
    """The full StyleBlend image of ``prompt`` for each named parameter set (same seed)."""
    outputs = blend_outputs(sd, coarse_text_encoder, prompt, variants, cfg, seed, **tokens)
    return {name: out.image for name, out in outputs.items()}


def self_attention_layers(sd, resolution: int) -> str:
    """A Markdown table of the UNet's self-attention layers (StyleBlend's numbering): where each sits, its
    feature-map size at ``resolution`` and its width, measured by one UNet pass."""
    blocks = sd.unet.transformer_blocks()
    shapes = {}

    def recorder(layer):
        def hook(attn, q, k, v):
            shapes[layer] = tuple(q.shape[1:])
            return q, k, v
        return hook

    factor = latent_factor(sd)
    latents = initial_latents(0, 1, resolution, resolution, sd.unet.config["in_channels"], factor)
    context = jt.zeros((1, MAX_TOKENS, sd.unet.config["cross_attention_dim"]))
    with jt.no_grad(), hooks_installed([b.attn1 for b in blocks], [recorder(i) for i in range(len(blocks))]):
        sd.unet(latents, 500, context).sync()
    down = _count_blocks(sd.unet.down_blocks)
    mid = _count_blocks([sd.unet.mid_block])
    lines = ["| layer | where | feature map | channels |", "|---:|---|---|---:|"]
    for layer, (tokens, width) in sorted(shapes.items()):
        where = "down" if layer < down else "mid" if layer < down + mid else "up"
        side = int(round(tokens ** 0.5))
        lines.append(f"| {layer} | {where} | {side}×{side} | {width} |")
    return "\n".join(lines)


def style_id(data_root, style) -> str:
    """``style`` as its folder name. ``papermill -p style 05`` passes the number 5: it is mapped back to the
    one style folder of ``data_root`` whose name is that number (``05``)."""
    if isinstance(style, str):
        return style
    matches = [name for name in list_styles(data_root) if name.isdigit() and int(name) == style]
    if len(matches) != 1:
        raise DataError(f"{data_root}: style {style!r} matches {len(matches)} style folders {matches}; "
                        f"pass the folder name as text (papermill -r style 05)")
    return matches[0]


def styles_with_results(results_root, set_name: str, data_root) -> List[str]:
    """The styles of ``data_root`` that have a folder of generated images under ``results_root/set_name``."""
    return [s for s in list_styles(data_root) if (Path(results_root) / set_name / s).is_dir()]


def _count_blocks(holders) -> int:
    return sum(len(t.transformer_blocks) for h in holders if h.attentions is not None for t in h.attentions)


# ---- the notebooks' exercises: small variations of what each notebook shows ----------------------------

def guidance_row(sd, prompt: str, guidances: Sequence[float], steps: int, size: int, seed: int,
                 negative_prompt: str = "") -> List[Image.Image]:
    """One image of ``prompt`` per classifier-free guidance scale (same seed; 1 = no guidance)."""
    return [text_to_image(sd, prompt, negative_prompt, steps, w, size, size, seed)[0]
            for w in progress(guidances, desc="guidance")]


def sdedit_seeds(sd, image: Image.Image, prompt: str, strength: float, seeds: Sequence[int], steps: int, size: int,
                 negative_prompt: str = "", guidance: float = 7.5) -> List[Image.Image]:
    """SDEdit of one image at one strength with each noise seed: how much the candidates of one image differ."""
    return [image_to_image(sd, [image], prompt, negative_prompt, strength=strength, steps=steps, guidance=guidance,
                           seed=s, size=size)[0] for s in progress(seeds, desc="seeds")]


def lora_counts(model, settings: Sequence[Tuple[Sequence[str], int]]) -> str:
    """A Markdown table of what a LoRA of each ``(targets, rank)`` in ``settings`` would train in ``model``."""
    lines = ["| targets | rank | layers | LoRA (A and B) | LoRA / model |", "|---|---:|---:|---:|---:|"]
    for targets, rank in settings:
        count = lora_parameter_count(model, targets, rank)
        lines.append(f"| {', '.join(targets)} | {rank} | {count.layers} | {count.lora:,} | "
                     f"{count.lora / count.model:.3%} |")
    return "\n".join(lines)


def text_lora_samples(sd, prompts: Sequence[str], text_encoder, multiplier: float, steps: int, size: int, seed: int,
                      guidance: float = 7.5) -> List[Image.Image]:
    """:func:`samples` through ``text_encoder`` with its LoRA at ``multiplier`` (0 = the encoder without its LoRA)."""
    with lora_multiplier(text_encoder, multiplier):
        return samples(sd, prompts, steps, size, seed, guidance, text_encoder=text_encoder)


def max_pixel_difference(a: Sequence[Image.Image], b: Sequence[Image.Image]) -> int:
    """The largest difference of one colour value (0-255) between two lists of same-size images, pair by pair."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} images against {len(b)}")
    return max(int(np.abs(np.asarray(x.convert("RGB"), np.int16) - np.asarray(y.convert("RGB"), np.int16)).max())
               for x, y in zip(a, b))


def coarse_variant(sd, style_data, recipe, paths, scratch_root, **changes):
    """Train the coarse style again with ``changes`` to ``recipe.coarse`` into a checkpoint under ``scratch_root``."""
    from .checkpoints import StyleCheckpoint
    from .coarse import train_coarse
    from .reproduce import run_sdedit

    sdedit = run_sdedit(sd, style_data, recipe, paths)  # the run's SDEdit images, reused
    scratch = StyleCheckpoint(scratch_root, paths.set_name, style_data.style)
    return train_coarse(sd, style_data, sdedit, replace(recipe.coarse, **changes), scratch, recipe.seed, force=True,
                        staged=recipe.staged_backward)


def fine_variant(sd, style_data, recipe, paths, scratch_root, **changes):
    """Retrain the fine style with ``changes`` to ``recipe.fine`` under ``scratch_root``, then reload the run's own."""
    from .checkpoints import StyleCheckpoint
    from .fine import load_fine, train_fine

    scratch = StyleCheckpoint(scratch_root, paths.set_name, style_data.style)
    result = train_fine(sd, style_data, replace(recipe.fine, **changes), scratch, recipe.seed, force=True,
                        staged=recipe.staged_backward)
    own = paths.checkpoint(style_data.style)
    if own.exists("fine"):
        load_fine(sd, own)
    return result


def token_similarity(text_encoder, tokenizer, token: str, other: str) -> float:
    """Cosine similarity of two tokens' embedding rows in ``text_encoder`` (e.g. a learned ``<F>`` and its start)."""
    from .sd.tokens import token_id

    vocab = tokenizer.get_vocab()  # added tokens such as "<F>" by name, words through the tokenizer
    a, b = (text_encoder.token_embedding_weight[vocab[t] if t in vocab else token_id(tokenizer, t)].numpy()
            .astype(np.float64) for t in (token, other))
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def blend_outputs(sd, coarse_text_encoder, prompt: str, variants: Dict[str, BlendParams], cfg: BlendConfig,
                  seed: int, **tokens) -> Dict[str, BlendOutput]:
    """Both branches' images of ``prompt`` for each named parameter set (same seed)."""
    return {name: blend_sample(sd, coarse_text_encoder, prompt, params, cfg, seed, **tokens)
            for name, params in progress(variants.items(), desc="variants")}


def preview(sd, ckpt, prompts: Sequence[str], params: BlendParams, cfg: BlendConfig,
            seed: Optional[int] = None) -> List[Image.Image]:
    """The images ``generate_style`` would save for ``prompts`` (their own seeds unless ``seed``), not saved."""
    coarse_text_encoder, tokens = load_style_weights(sd, ckpt)
    return [blend_sample(sd, coarse_text_encoder, p, params, cfg, params.seed_for(p) if seed is None else seed,
                         **tokens).fsb for p in progress(prompts, desc="preview")]


def weighted_score(terms: Dict[str, float], weights: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Style, text, quality and final score of ``terms`` under ``weights`` (changes to the challenge's weights)."""
    from .evaluate import AGGREGATES, TERMS, combine

    return dict(zip(AGGREGATES, combine(*(terms[k] for k in TERMS), weights=weights)))


def shift_hue(image: Image.Image, fraction: float) -> Image.Image:
    """``image`` with every hue turned by ``fraction`` of the colour wheel (layout, saturation, brightness kept)."""
    hsv = np.asarray(image.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(fraction * 256))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def saved_results(paths, style: str, prompts: Sequence[str]) -> List[Image.Image]:
    """The images saved for ``prompts`` of ``style`` in ``<results_root>/<set>/<style>/`` (notebook 05's)."""
    from .data import result_path

    return read_images([result_path(paths.results_root, paths.set_name, style, p) for p in prompts])
