"""StyleBlend's two-branch sampler and per-style generation.

Both branches start from the same initial latent and share one UNet pass over the batch
``[uncond CSB, uncond FSB, cond CSB, cond FSB]``:

* the coarse-style branch (CSB) reads ``"A <prompt> in the style of <C>."`` through the coarse text encoder,
  negative ``""``, with the UNet LoRA at scale ``s`` (per style) on the attention projections ``to_q`` /
  ``to_k`` / ``to_v``;
* the fine-style branch (FSB) reads ``"... of <F>."`` through ``sd.text_encoder``, negative ``"blur"``, with
  the UNet LoRA at 1.0.

In the self-attention (``attn1``) of layers listed as c2f the FSB rows take the CSB conditional queries, and in
layers listed as f2c the CSB rows take the FSB conditional keys and values, each for the first part of the
steps. The exchange happens only in :attr:`Attention.hook`, installed for one run and always removed. The
FSB image, resized to ``output_size``, is the result.

Details taken from the original implementation (``zichongc/jittor-L6810K2-StyleTransfer``, ``modules.py``,
``pipeline.py``, ``test.py``; the author's PyTorch ``zichongc/StyleBlend`` does the same):

* the CSB LoRA scale applies to ``to_q`` / ``to_k`` / ``to_v`` of every attention layer (self and cross);
  ``to_out.0`` runs at 1.0 in both branches;
* a layer in both lists exchanges queries *and* keys/values for the first ``c2f_ratio`` of the steps (the
  original registers one "feature blender" on the c2f schedule there); ``f2c_ratio`` counts only for layers
  listed as f2c alone;
* a ratio covers the steps ``i < int(ratio * steps)``;
* the result is resized with PIL's default ``resize`` filter of the original (bicubic), not Lanczos.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from PIL import Image

from .backend import jt

from .checkpoints import StyleCheckpoint
from .coarse import load_coarse
from .config import BlendConfig, BlendParams, format_prompt
from .data import StyleData, result_path
from .errors import ConfigError
from .fine import load_fine
from .io import save_image
from .sd.models.attention import hooks_installed
from .sd.models.lora import lora_multiplier
from .progress import progress
from .sd.sampling import decode_latents, denoise, encode_prompt, initial_latents, latent_factor, to_pil

MODES = ("full", "csb", "fsb", "q_only", "kv_only", "none")
CSB_SCALED = ("to_q", "to_k", "to_v")  # UNet LoRA layers that run at scale s in the CSB
# Rows of the two-branch batch [uncond CSB, uncond FSB, cond CSB, cond FSB] after each exchange.
Q_ROWS = (0, 2, 2, 2)   # both FSB rows take the CSB conditional queries
KV_ROWS = (3, 1, 3, 3)  # both CSB rows take the FSB conditional keys and values

# probe(layer, step, q, k, v): what a self-attention layer attends with, after the exchange
Probe = Callable[[int, int, jt.Var, jt.Var, jt.Var], None]


@dataclass(frozen=True)
class InjectionPlan:
    """Which self-attention layers (0-15) exchange features at which sampling steps (0-based)."""
    c2f_layers: Sequence[int]
    f2c_layers: Sequence[int]
    c2f_ratio: float
    f2c_ratio: float
    num_steps: int
    queries: bool = True       # False: no query exchange (ablation "kv_only")
    keys_values: bool = True   # False: no key/value exchange (ablation "q_only")

    @classmethod
    def for_mode(cls, params: BlendParams, num_steps: int, mode: str = "full") -> "InjectionPlan":
        """The plan of ``params`` for an ablation ``mode`` (see :data:`MODES`); one-branch modes exchange nothing."""
        check_mode(mode)
        exchange = mode in ("full", "q_only", "kv_only")
        return cls(tuple(params.c2f_layers), tuple(params.f2c_layers), params.c2f_ratio, params.f2c_ratio,
                   num_steps, queries=exchange and mode != "kv_only", keys_values=exchange and mode != "q_only")

    def inject_q(self, layer: int, step: int) -> bool:
        """True when the FSB takes the CSB's queries in ``layer`` at ``step``."""
        return self.queries and layer in self.c2f_layers and step < int(self.c2f_ratio * self.num_steps)

    def inject_kv(self, layer: int, step: int) -> bool:
        """True when the CSB takes the FSB's keys and values in ``layer`` at ``step``."""
        if not self.keys_values or layer not in self.f2c_layers:
            return False
        ratio = self.c2f_ratio if layer in self.c2f_layers else self.f2c_ratio
        return step < int(ratio * self.num_steps)


@dataclass
class BlendOutput:
    """One prompt's images at ``output_size`` (None for a branch a one-branch mode did not run) and the
    final latents (rows CSB, FSB; one row in a one-branch mode)."""
    fsb: Optional[Image.Image]
    csb: Optional[Image.Image]
    latents: jt.Var

    @property
    def image(self) -> Image.Image:
        """The run's result: the FSB image, or the CSB image in mode ``"csb"``."""
        return self.fsb if self.fsb is not None else self.csb


def check_mode(mode: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ConfigError(f"mode = {mode!r} is not a StyleBlend mode (one of {', '.join(MODES)})")


class _Exchange:
    """The state of one sampling run that every layer's hook shares: the plan, the probe and the current step."""

    def __init__(self, plan: InjectionPlan, probe: Optional[Probe]):
        self.plan, self.probe, self.step = plan, probe, 0

    def advance(self, index: int, *_) -> None:
        """``denoise``'s callback after step ``index``: the next UNet pass is step ``index + 1``."""
        self.step = index + 1


class _LayerHook:
    """``attn1.hook`` of self-attention layer ``layer``: swaps batch rows of q / k / v by the plan."""

    def __init__(self, exchange: _Exchange, layer: int):
        self.exchange, self.layer = exchange, layer

    def __call__(self, attn, q: jt.Var, k: jt.Var, v: jt.Var):
        plan, step = self.exchange.plan, self.exchange.step
        if plan.inject_q(self.layer, step):
            q = _rows(q, Q_ROWS)
        if plan.inject_kv(self.layer, step):
            k, v = _rows(k, KV_ROWS), _rows(v, KV_ROWS)
        if self.exchange.probe is not None:
            self.exchange.probe(self.layer, step, q, k, v)
        return q, k, v


def _rows(x: jt.Var, rows: Sequence[int]) -> jt.Var:
    return jt.concat([x[r:r + 1] for r in rows], dim=0)


def blend_sample(sd, coarse_text_encoder, prompt: str, params: BlendParams, cfg: BlendConfig, seed: int,
                 mode: str = "full", fine_token: str = "<F>", coarse_token: str = "<C>",
                 probe: Optional[Probe] = None) -> BlendOutput:
    """Generate ``prompt`` with both branches from the latents of ``seed`` (see the module docstring).

    ``mode``: ``"full"`` (the method), ``"q_only"`` / ``"kv_only"`` (one exchange direction), ``"none"`` (both
    branches, no exchange), ``"csb"`` / ``"fsb"`` (that branch alone, batch ``[uncond, cond]``). ``probe`` sees
    every self-attention layer's q / k / v after the exchange. The initial latent of ``seed`` is the original
    entry's (:func:`styleblend.sd.sampling.initial_latents`), on CPU and GPU alike.
    """
    plan = InjectionPlan.for_mode(params, cfg.steps, mode)
    branches = {"csb": (0,), "fsb": (1,)}.get(mode, (0, 1))
    text = [(coarse_text_encoder, coarse_token, cfg.csb_negative), (sd.text_encoder, fine_token, cfg.fsb_negative)]
    scales = [params.lora_scale, 1.0]
    factor = latent_factor(sd)
    start = initial_latents(seed, 1, cfg.resolution, cfg.resolution, sd.unet.config["in_channels"], factor)
    exchange = _Exchange(plan, probe)
    blocks = sd.unet.transformer_blocks()
    # UNet-LoRA multipliers per sample: the branches' scales for the uncond rows, then again for the cond rows
    csb_scales = jt.array([scales[b] for b in branches] * 2, dtype=jt.float32)
    with jt.no_grad(), lora_multiplier(sd.unet, csb_scales, CSB_SCALED), \
            hooks_installed([block.attn1 for block in blocks], [_LayerHook(exchange, i) for i in range(len(blocks))]):
        cond, uncond = [], []
        for b in branches:
            encoder, token, negative = text[b]
            embeds = encode_prompt(sd, [negative, format_prompt(cfg.prompt_template, prompt=prompt, token=token)],
                                   text_encoder=encoder)
            uncond.append(embeds[0:1])
            cond.append(embeds[1:2])
        sd.scheduler.set_timesteps(cfg.steps)
        latents = denoise(sd, jt.concat([start] * len(branches)), jt.concat(cond), jt.concat(uncond),
                          sd.scheduler.timesteps, cfg.guidance, exchange.advance)
        images = [_resize(im, cfg.output_size) for im in to_pil(decode_latents(sd, latents))]
    by_branch = dict(zip(branches, images))
    return BlendOutput(fsb=by_branch.get(1), csb=by_branch.get(0), latents=latents)


def _resize(image: Image.Image, size: int) -> Image.Image:
    return image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC)


def load_style_weights(sd, ckpt: StyleCheckpoint):
    """A trained style into ``sd``: ``(coarse text encoder, {"coarse_token": …, "fine_token": …})`` for
    :func:`blend_sample` (the fine style's LoRA and token go into ``sd`` itself)."""
    coarse_text_encoder = load_coarse(sd, ckpt)
    load_fine(sd, ckpt)
    return coarse_text_encoder, {"coarse_token": ckpt.load_embedding("coarse_embeds")[0],
                                 "fine_token": ckpt.load_embedding("fine_embeds")[0]}


def generate_style(sd, style_data: StyleData, ckpt: StyleCheckpoint, params: BlendParams, cfg: BlendConfig,
                   results_root, set_name: str, seed: Optional[int] = None, force: bool = False,
                   mode: str = "full") -> List[Path]:
    """Generate every prompt of ``style_data`` into ``<results>/<set>/<style>/<Prompt>.png`` (``output_size``).

    Each prompt uses ``params.seed_for(prompt)`` unless ``seed`` is given. Existing images are kept (resume)
    unless ``force``; the style's checkpoint is loaded only when something is left to generate. ``mode`` is an
    ablation's (:data:`MODES`; its image is :attr:`BlendOutput.image`). Returns the paths of all the style's images.
    """
    jobs = [(prompt, result_path(results_root, set_name, style_data.style, prompt))
            for prompt in style_data.prompts.values()]
    todo = [(prompt, path) for prompt, path in jobs if force or not path.exists()]
    if todo:
        coarse_text_encoder, tokens = load_style_weights(sd, ckpt)
        for prompt, path in progress(todo, desc=f"style {style_data.style}"):
            out = blend_sample(sd, coarse_text_encoder, prompt, params, cfg,
                               params.seed_for(prompt) if seed is None else seed, mode=mode, **tokens)
            save_image(out.image, path, overwrite=force)
    return [path for _, path in jobs]
