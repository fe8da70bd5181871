"""What the coarse and the fine style trainings share: latents of the training images, the denoising loss, the
optimisation loop (AdamW, loss scaling for float16 weights, staged gradients), shuffling, LoRA seeding.

Every random draw comes from a ``numpy.random.Generator`` seeded by the recipe.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .adamw import AdamW
from .backend import jt

from .errors import DivergedError
from .progress import progress
from .sd.models.lora import lora_layers
from .sd.models.stages import Stage, StagedLoss, run_stages, staged_grads
from .sd.sampling import to_tensor

Moments = Tuple[np.ndarray, np.ndarray]  # VAE posterior mean and std of one image, [1, 4, h, w]
FLOAT16_LOSS_SCALE = 1024.0  # float16 UNet weights: loss multiplier for the backward pass (see loss_scale)


def encode_moments(sd, images: Sequence[Image.Image], size: int, batch: int = 1) -> List[Moments]:
    """VAE posterior (mean, std) of each image resized to ``size``, as numpy, ``batch`` images a call: one at a
    time bounds the memory at SD's sizes; the toy pretraining's thousands of small pictures go in batches, so a GPU
    is not left idle between calls (on a CPU batching changes nothing)."""
    moments = []
    with jt.no_grad(), progress(total=len(images), desc="encoding images") as bar:
        for start in range(0, len(images), batch):
            posterior = sd.vae.encode(to_tensor(images[start:start + batch], size))
            mean, std = posterior.mean.numpy(), posterior.std.numpy()
            moments += [(mean[i:i + 1], std[i:i + 1]) for i in range(len(mean))]
            bar.update(len(mean))
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
        scale: float = 1.0, saved=None) -> List[float]:
    """AdamW on ``params`` for ``steps`` steps of ``loss_fn(step)``; step ``s`` uses ``lr * lr_factor(s)``.

    ``loss_fn`` returns the loss, or a :class:`StagedLoss` to be differentiated one stage at a time.
    ``scale`` (:func:`loss_scale`) multiplies the loss before the backward pass; AdamW's step with gradients and
    ``eps`` both multiplied by it is the same step, so nothing is unscaled. Returns the (unscaled) loss of every
    step. A loss or final weight that is NaN or Inf raises :class:`DivergedError` (callers save only after
    ``fit`` returns, so a diverged run keeps no checkpoint; saved progress holds only steps before the NaN).

    ``saved``: a run's saved progress to continue (:class:`styleblend.pretrain.SavedProgress`'s stages):
    ``saved.restore(optimizer)`` loads AdamW's moments and returns the steps already done and their losses;
    ``saved.after_step(done, losses, optimizer)`` runs after every step and saves when due.
    """
    optimizer = AdamW(params, lr, betas, eps * scale, weight_decay)
    start, losses = saved.restore(optimizer) if saved else (0, [])
    bar = progress(range(start, steps), desc=desc, total=steps, initial=start)
    for step in bar:
        optimizer.lr = lr * lr_factor(step)
        loss, grads = _loss_and_grads(loss_fn(step), params, scale)
        optimizer.step(grads)
        losses.append(float(loss.item()))
        if not math.isfinite(losses[-1]):
            raise DivergedError(f"{desc}: the loss is {losses[-1]} at step {step + 1} of {steps}; nothing was "
                                f"saved (a learning rate too high for this model? lr = {lr:g})")
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if saved:
            saved.after_step(step + 1, losses, optimizer)
    if not all(np.isfinite(p.numpy()).all() for p in params):  # .numpy(): no new fused kernel to compile
        raise DivergedError(f"{desc}: the weights hold NaN or Inf after step {steps}; nothing was saved "
                            f"(a learning rate too high for this model? lr = {lr:g})")
    return losses


def _loss_and_grads(objective: Union[jt.Var, StagedLoss], params: List[jt.Var], scale: float):
    """``(loss, gradients of scale × the loss with respect to params)``, a :class:`StagedLoss` one stage at a time
    (:func:`staged_grads`)."""
    if isinstance(objective, StagedLoss):
        return staged_grads(objective.stages, objective.inputs, objective.output, params, scale)
    return objective, jt.grad(objective * scale, params)


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


def plain_config(cfg) -> dict:
    """A config dataclass as YAML-ready plain values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
