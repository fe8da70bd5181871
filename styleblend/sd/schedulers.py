"""The noise schedule of Stable Diffusion: DDIM sampling steps and DDPM forward-noising (training) helpers.

One class, :class:`DDIMScheduler`, holds the trained schedule (``alphas_cumprod``) and everything that uses
it: ``set_timesteps`` / ``step`` / ``predict_x0`` for inference, ``add_noise`` / ``get_velocity`` /
``training_target`` / ``sample_timesteps`` for training. Its numbers equal diffusers' ``DDIMScheduler`` (and
``DDPMScheduler.add_noise``): betas and their cumulative product are float32 as in diffusers, and the
per-step coefficients are float32 scalars computed in the same order.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Union

import numpy as np

from ..backend import jt

from ..errors import ConfigError

Timestep = Union[int, np.integer, np.ndarray]

DEFAULTS: Dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "set_alpha_to_one": True,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
}
# Keys whose other values would need a feature this scheduler does not have.
SUPPORTED = {
    "beta_schedule": ("linear", "scaled_linear"),
    "trained_betas": (None,),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("leading", "trailing", "linspace"),
    "rescale_betas_zero_snr": (False,),
    "thresholding": (False,),
}
F32_ONE = np.float32(1.0)


class StepOutput(NamedTuple):
    prev_sample: jt.Var
    pred_original_sample: jt.Var


class DDIMScheduler:
    """DDIM (eta = 0: deterministic) over a DDPM noise schedule; ``config`` is the resolved dict."""

    def __init__(self, config: Dict[str, Any]):
        self.config = config
        n = config["num_train_timesteps"]
        if config["beta_schedule"] == "linear":
            betas = np.linspace(config["beta_start"], config["beta_end"], n, dtype=np.float64)
        else:  # scaled_linear: linear in sqrt(beta)
            betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=np.float64) ** 2
        self.betas = betas.astype(np.float32)
        alphas = F32_ONE - self.betas
        # torch's CPU cumprod accumulates float32 inputs in float64 and rounds each output to float32
        self.alphas_cumprod = np.cumprod(alphas.astype(np.float64)).astype(np.float32)
        self.final_alpha_cumprod = F32_ONE if config["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.num_inference_steps = None
        self.timesteps = np.arange(n, dtype=np.int64)[::-1].copy()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DDIMScheduler":
        """Build from any SD ``scheduler_config.json`` dict (DDIM, PNDM, Euler, ...): keys DDIM does not
        use (``skip_prk_steps``, ``use_karras_sigmas``, ...) belong to the other sampler and are ignored."""
        resolved = dict(DEFAULTS)
        resolved.update({k: v for k, v in config.items() if k in DEFAULTS})
        for key, allowed in SUPPORTED.items():
            if resolved[key] not in allowed:
                raise ConfigError(f"scheduler: config key '{key}' = {resolved[key]!r} is not supported "
                                  f"(only {allowed!r})")
        return cls(resolved)

    # ---- inference -------------------------------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """Choose ``num_inference_steps`` descending timesteps by the config's ``timestep_spacing``."""
        n = self.config["num_train_timesteps"]
        if not 0 < num_inference_steps <= n:
            raise ConfigError(f"steps = {num_inference_steps} must be between 1 and {n}")
        spacing = self.config["timestep_spacing"]
        if spacing == "linspace":
            steps = np.linspace(0, n - 1, num_inference_steps).round()[::-1]
        elif spacing == "leading":
            steps = np.arange(num_inference_steps)[::-1] * (n // num_inference_steps) + self.config["steps_offset"]
        else:  # trailing
            steps = np.round(np.arange(n, 0, -n / num_inference_steps)) - 1
        self.num_inference_steps = num_inference_steps
        self.timesteps = steps.astype(np.int64)
        return self.timesteps

    def _alpha_prev(self, t: int) -> np.float32:
        # like diffusers, the previous timestep is t - n_train // steps whatever the spacing
        prev = t - self.config["num_train_timesteps"] // self.num_inference_steps
        return self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod

    def _x0_and_eps(self, model_output: jt.Var, t: int, sample: jt.Var):
        a = self.alphas_cumprod[t]
        sqrt_a, sqrt_b = float(np.sqrt(a)), float(np.sqrt(F32_ONE - a))
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            x0, eps = (sample - sqrt_b * model_output) / sqrt_a, model_output
        elif kind == "v_prediction":
            x0 = sqrt_a * sample - sqrt_b * model_output
            eps = sqrt_a * model_output + sqrt_b * sample
        else:  # sample
            x0, eps = model_output, (sample - sqrt_a * model_output) / sqrt_b
        if self.config["clip_sample"]:
            limit = self.config["clip_sample_range"]
            x0 = x0.clamp(-limit, limit)
        return x0, eps

    def step(self, model_output: jt.Var, t: int, sample: jt.Var, eta: float = 0.0,
             noise: jt.Var = None) -> StepOutput:
        """One DDIM step from timestep ``t`` to the previous one; ``eta > 0`` adds ``noise`` (or fresh
        ``jt.randn``) scaled by ``eta`` times the DDPM posterior standard deviation."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps before step")
        t = int(t)
        x0, eps = self._x0_and_eps(model_output, t, sample)
        a_t, a_prev = self.alphas_cumprod[t], self._alpha_prev(t)
        variance = ((F32_ONE - a_prev) / (F32_ONE - a_t)) * (F32_ONE - a_t / a_prev)
        std = np.float32(eta) * np.sqrt(variance)
        prev = float(np.sqrt(a_prev)) * x0 + float(np.sqrt(F32_ONE - a_prev - std * std)) * eps
        if eta > 0:
            noise = jt.randn(model_output.shape, dtype=model_output.dtype) if noise is None else noise
            prev = prev + float(std) * noise
        return StepOutput(prev, x0)

    def predict_x0(self, model_output: jt.Var, t: Timestep, sample: jt.Var) -> jt.Var:
        """The clean sample implied by ``model_output`` at ``t`` (an int or one per sample; no clipping)."""
        sqrt_a, sqrt_b = self._coefficients(t, sample.ndim)
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            return (sample - sqrt_b * model_output) / sqrt_a
        if kind == "v_prediction":
            return sqrt_a * sample - sqrt_b * model_output
        return model_output

    # ---- forward process (training) --------------------------------------------------------------------

    def _coefficients(self, t: Timestep, ndim: int):
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t): floats for an int ``t``, [B, 1, ...] Vars for an array."""
        a = self.alphas_cumprod[np.asarray(t, dtype=np.int64)]
        sqrt_a, sqrt_b = np.sqrt(a), np.sqrt(F32_ONE - a)
        if np.ndim(t) == 0:
            return float(sqrt_a), float(sqrt_b)
        shape = (-1,) + (1,) * (ndim - 1)
        return jt.array(sqrt_a.reshape(shape)), jt.array(sqrt_b.reshape(shape))

    def add_noise(self, x0: jt.Var, noise: jt.Var, t: Timestep) -> jt.Var:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        sqrt_a, sqrt_b = self._coefficients(t, x0.ndim)
        return sqrt_a * x0 + sqrt_b * noise

    def get_velocity(self, x0: jt.Var, noise: jt.Var, t: Timestep) -> jt.Var:
        """v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0 (the v-prediction target)."""
        sqrt_a, sqrt_b = self._coefficients(t, x0.ndim)
        return sqrt_a * noise - sqrt_b * x0

    def training_target(self, x0: jt.Var, noise: jt.Var, t: Timestep) -> jt.Var:
        """What the UNet learns to output for this ``prediction_type``: noise, velocity or x0."""
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.get_velocity(x0, noise, t)
        return x0

    def sample_timesteps(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """``batch`` training timesteps, uniform over [0, num_train_timesteps)."""
        return rng.integers(0, self.config["num_train_timesteps"], size=batch, dtype=np.int64)


# Samplers by the ``_class_name`` a model folder's ``scheduler/scheduler_config.json`` gives: a new sampler is a class
# with ``from_config``, ``set_timesteps``, ``step`` and the training helpers above, added here.
SCHEDULERS = {"DDIMScheduler": DDIMScheduler}


def scheduler_from_config(config: Mapping[str, Any]):
    """The sampler a model folder names, when this package has it; otherwise DDIM (the sampler the original
    StyleBlend entry uses for SD 2.1) with the folder's noise schedule."""
    return SCHEDULERS.get(config.get("_class_name"), DDIMScheduler).from_config(config)
