"""Stable Diffusion sampling: prompt encoding, seeded latents, the guided DDIM loop, text-to-image and SDEdit.

The steps equal diffusers' ``StableDiffusionPipeline`` with a ``DDIMScheduler``: prompts padded to 77
tokens, the batch ``[uncond..., cond...]`` through the UNet, ``noise = u + g · (c − u)``, a scheduler step,
and the VAE decode of ``latents / scaling_factor``. Randomness comes from ``numpy`` seeds, except the initial
latents of text-to-image and StyleBlend, which are drawn as the original entry draws them (:func:`initial_latents`).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..backend import jt

from ..errors import ConfigError, DivergedError
from ..progress import progress

MAX_TOKENS = 77
Prompts = Union[str, Sequence[str]]
# callback(step_index, timestep, latents after the step, x0 predicted at the step)
StepCallback = Callable[[int, int, jt.Var, jt.Var], None]
Size = Union[int, Tuple[int, int]]


def latent_factor(sd) -> int:
    """How many pixels one latent covers per side: 2 ** (VAE levels − 1), 8 for SD."""
    return 2 ** (len(sd.vae.config["block_out_channels"]) - 1)


def encode_prompt(sd, prompts: List[str], text_encoder=None) -> jt.Var:
    """Text embeddings ``[B, 77, D]`` of ``prompts`` (by ``text_encoder`` if given, else ``sd.text_encoder``)."""
    return (text_encoder or sd.text_encoder)(jt.array(token_ids(sd, prompts)))


def token_ids(sd, prompts: List[str]) -> np.ndarray:
    """The CLIP token ids ``[B, 77]`` (int32) of ``prompts``, padded to 77 tokens; a longer prompt is truncated
    with a warning that names it. Tokenizing costs host time: a training loop over fixed captions calls it once."""
    for prompt in prompts:
        if len(sd.tokenizer(prompt).input_ids) > MAX_TOKENS:
            warnings.warn(f"prompt {prompt[:60]!r}... is longer than {MAX_TOKENS} tokens and was truncated",
                          stacklevel=3)
    return sd.tokenizer(list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="np").input_ids.astype(np.int32)


def initial_latents(seed: int, batch: int, height: int, width: int, channels: int = 4,
                    factor: int = 8) -> jt.Var:
    """Standard normal latents ``[batch, channels, height // factor, width // factor]`` drawn as the original
    entry draws them (its ``test.py``): ``jt.set_global_seed(seed)``, then ``jt.randn`` on Jittor's CPU
    generator, so its hand-picked per-prompt seeds give its noise, the same on CPU and GPU machines.
    ``jt.set_global_seed`` also reseeds Python's and numpy's global generators (nothing here uses them), and it
    gives seeds 0 and 1 the same numbers."""
    shape = (batch, channels, height // factor, width // factor)
    jt.sync_all(True)  # pending GPU work must not run inside the CPU scope below (a GPU-only op would fail there)
    jt.set_global_seed(seed)
    with jt.flag_scope(use_cuda=0):
        noise = jt.randn(shape).numpy()
    return jt.array(noise)


def denoise(sd, latents: jt.Var, cond: jt.Var, uncond: Optional[jt.Var], timesteps: Sequence[int],
            guidance: float, callback: Optional[StepCallback] = None) -> jt.Var:
    """Run ``sd.scheduler`` over ``timesteps`` (after its ``set_timesteps``) with classifier-free guidance.

    ``uncond=None`` means no guidance: the UNet sees ``cond`` alone and ``guidance`` is unused. Latents that
    become NaN or Inf raise :class:`DivergedError` naming the step.
    """
    for i, t in enumerate(progress(timesteps, desc="denoise")):
        t = int(t)
        if uncond is None:
            noise = sd.unet(latents, t, cond).float32()
        else:
            both = sd.unet(jt.concat([latents, latents]), t, jt.concat([uncond, cond])).float32()
            u, c = both[:len(latents)], both[len(latents):]
            noise = u + guidance * (c - u)
        latents, x0 = sd.scheduler.step(noise, t, latents)
        latents.sync()  # the step as its own kernels; the check below adds one small reduction
        if not math.isfinite(latents.sum().item()):  # a NaN or Inf anywhere makes the sum one
            raise DivergedError(f"denoising: the latents hold NaN or Inf at step {i + 1} of {len(timesteps)} "
                                f"(timestep {t}); no image was saved")
        if callback is not None:
            callback(i, t, latents, x0)
    return latents


def decode_latents(sd, latents: jt.Var) -> jt.Var:
    """Latents (scaled as the UNet sees them) -> images ``[B, 3, H, W]`` in about [-1, 1], one image at a time:
    the VAE decoder's full-size activations are an image's largest tensors (measured: 3 × 576 MiB live for two
    768² images in float16), so a batch would multiply the peak."""
    images = []
    for i in range(latents.shape[0]):
        images.append(sd.vae.decode(latents[i:i + 1] / sd.vae.config["scaling_factor"]))
        images[-1].sync()
    return jt.concat(images)


def to_pil(images: jt.Var) -> List[Image.Image]:
    """Images ``[B, 3, H, W]`` in [-1, 1] -> RGB PIL images (clipped, rounded to 8 bits)."""
    unit = np.clip(images.numpy().transpose(0, 2, 3, 1) / 2 + 0.5, 0, 1)
    return [Image.fromarray(x) for x in (unit * 255).round().astype(np.uint8)]


def to_tensor(images: Sequence[Image.Image], size: Size) -> jt.Var:
    """RGB PIL images, resized to ``size`` = (width, height) or a side -> ``[B, 3, H, W]`` in [-1, 1].

    The resize is the original entry's: PIL's bicubic, to exactly ``size`` (a non-square image is squashed).
    """
    size = _width_height(size)
    rgb = [im.convert("RGB") for im in images]
    arrays = [np.asarray(im if im.size == size else im.resize(size, Image.BICUBIC)) for im in rgb]
    return jt.array(np.stack(arrays).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1)


def _width_height(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _check_size(width: int, height: int, factor: int) -> None:
    if width % factor or height % factor or width <= 0 or height <= 0:
        raise ConfigError(f"image size {width}x{height} must be positive multiples of {factor}")


def _prompt_lists(prompt: Prompts, negative_prompt: Prompts, batch: Optional[int] = None):
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if batch is not None and len(prompts) == 1:
        prompts = prompts * batch
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != len(prompts) or (batch is not None and len(prompts) != batch):
        raise ConfigError(f"got {len(prompts)} prompts and {len(negatives)} negative prompts"
                          + (f" for {batch} images" if batch is not None else ""))
    return prompts, negatives


def _guided(sd, latents, prompts, negatives, timesteps, guidance, callback) -> List[Image.Image]:
    cond = encode_prompt(sd, prompts)
    uncond = encode_prompt(sd, negatives) if guidance > 1 else None
    latents = denoise(sd, latents, cond, uncond, timesteps, guidance, callback)
    return to_pil(decode_latents(sd, latents))


def text_to_image(sd, prompt: Prompts, negative_prompt: Prompts = "", steps: int = 30, guidance: float = 7.5,
                  height: int = 768, width: int = 768, seed: int = 0, latents: Optional[jt.Var] = None,
                  callback: Optional[StepCallback] = None) -> List[Image.Image]:
    """Images for ``prompt`` (one per prompt) by guided DDIM from ``initial_latents(seed)`` or ``latents``."""
    prompts, negatives = _prompt_lists(prompt, negative_prompt)
    factor = latent_factor(sd)
    _check_size(width, height, factor)
    if latents is None:
        latents = initial_latents(seed, len(prompts), height, width, sd.unet.config["in_channels"], factor)
    sd.scheduler.set_timesteps(steps)
    with jt.no_grad():
        return _guided(sd, latents, prompts, negatives, sd.scheduler.timesteps, guidance, callback)


def image_to_image(sd, images: Sequence[Image.Image], prompt: Prompts, negative_prompt: Prompts = "",
                   strength: float = 0.8, steps: int = 20, guidance: float = 7.5, seed: int = 0,
                   size: Optional[Size] = None, sample_posterior: bool = True) -> List[Image.Image]:
    """SDEdit: noise each image's latent to step ``steps - int(steps * strength)`` of a ``steps``-step schedule,
    then denoise towards ``prompt``; ``strength=0`` returns the VAE round trip.

    The latent is a sample of the VAE posterior (as diffusers' img2img and the original entry's SDEdit);
    ``sample_posterior=False`` takes its mean. The posterior sample and the added noise come from
    ``numpy.random.default_rng(seed)``. ``size`` (width, height) defaults to the first image's size rounded
    down to the latent grid.
    """
    if not 0 <= strength <= 1:
        raise ConfigError(f"strength = {strength} must be between 0 and 1")
    prompts, negatives = _prompt_lists(prompt, negative_prompt, len(images))
    factor = latent_factor(sd)
    size = tuple(side - side % factor for side in images[0].size) if size is None else _width_height(size)
    _check_size(*size, factor)
    pixels = to_tensor(images, size)
    sd.scheduler.set_timesteps(steps)
    timesteps = sd.scheduler.timesteps[steps - int(steps * strength):]
    rng = np.random.default_rng(seed)
    with jt.no_grad():
        posterior = sd.vae.encode(pixels)
        latents = posterior.mean
        if sample_posterior:
            eps = rng.standard_normal(tuple(latents.shape), dtype=np.float32)
            latents = latents + posterior.std * jt.array(eps).cast(latents.dtype)
        latents = latents * sd.vae.config["scaling_factor"]
        if len(timesteps):
            noise = jt.array(rng.standard_normal(tuple(latents.shape), dtype=np.float32))
            latents = sd.scheduler.add_noise(latents, noise, timesteps[0])
        return _guided(sd, latents, prompts, negatives, timesteps, guidance, None)
