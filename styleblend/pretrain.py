"""Pretraining the toy model from scratch on the toy world (:mod:`styleblend.toyworld`): the VAE first, then the
text encoder and the UNet together, as Stable Diffusion was trained, at toy size (``configs/toy``: SD 2.x's
block layout, so StyleBlend's 16 self-attention layers exist, with small widths; 64² images, 16² latents).

Every number is in ``configs/toy/pretrain.yaml``; the same file and seed give the same model up to the
device's floating-point noise. :func:`pretrain_toy` writes a diffusers-layout folder that
:func:`styleblend.sd.loading.load_sd` reads like any SD 2.x folder, and ``training_curves.json`` beside it.
A pretraining saves its progress as it goes (:class:`SavedProgress`): an interrupted one, rerun, goes on where it
stopped and ends with the model an uninterrupted run makes.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import List

import numpy as np

from .backend import jt

from .config import CONFIG_DIR
from .errors import ConfigError, ModelLoadError
from .io import load_safetensors, load_safetensors_metadata, load_yaml, save_safetensors, write_atomic
from .sd.loading import CONFIG_FILES, MODELS, load_sd, write_clip_vocab, write_random_sd
from .sd.sampling import latent_factor, to_tensor, token_ids
from .toyworld import PRETRAIN_STYLES, check_spread, pretraining_pairs
from .training import denoising_loss, encode_moments, fit, sample_latents

TOY_CONFIGS = CONFIG_DIR / "toy"
ENCODE_BATCH = 256  # pictures a VAE call when encoding the pairs (one 64² picture a call leaves a GPU mostly idle)
CURVES_FILE = "training_curves.json"  # beside the weights: the config and every step's loss, per stage
SAVE_EVERY = 200  # steps between two saves of a pretraining's progress (about 76 MB each for the toy model)


@dataclass
class PretrainConfig:
    """The toy model's pretraining: data, then the VAE's and the denoiser's (text encoder + UNet) optimisation."""
    seed: int
    size: int           # image side in pixels
    pairs: int          # (image, caption) pairs drawn from the toy world's pretraining styles
    styles: tuple       # which of them (toyworld.PRETRAIN_STYLES; the held-out styles are never allowed)
    spread: float       # how far an object's centre may be from the picture's centre (toyworld.sample_scene)
    vae_steps: int
    vae_batch: int
    vae_lr: float
    kl_weight: float    # the VAE's KL term (a small weight keeps latents close to N(0, 1) without blurring)
    denoiser_steps: int
    denoiser_batch: int
    denoiser_lr: float
    warmup_steps: int   # the denoiser's learning rate rises linearly over these steps, then decays (cosine) to 0
    caption_drop: float  # fraction of captions replaced by "" (classifier-free guidance needs the empty prompt)

    @classmethod
    def load(cls, path=None, smoke: bool = False) -> "PretrainConfig":
        """``configs/toy/pretrain.yaml`` (its ``smoke`` section with ``smoke``), then the user's file ``path``."""
        data = load_yaml(TOY_CONFIGS / "pretrain.yaml")
        values = dict(data["full"], **(data["smoke"] if smoke else {}))
        if path:
            values.update(load_yaml(path) or {})
        source = path or TOY_CONFIGS / "pretrain.yaml"
        names = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        styles = values.get("styles")
        if not isinstance(styles, list) or not styles or set(map(str, styles)) - set(PRETRAIN_STYLES):
            raise ConfigError(f"{source}: styles must be a list of pretraining styles ({', '.join(PRETRAIN_STYLES)}; "
                              f"the held-out ones stay out of pretraining), not {styles!r}")
        cast = {"float": float, "int": int, "tuple": lambda v: tuple(map(str, v))}
        try:
            cfg = cls(**{k: cast[names[k]](v) for k, v in values.items()})
            check_spread(cfg.spread)
        except (TypeError, ValueError, ConfigError) as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        return cfg


def vae_loss(vae, images: jt.Var, eps: jt.Var, kl_weight: float) -> jt.Var:
    """Reconstruction MSE of a posterior sample plus ``kl_weight`` × the KL divergence to N(0, 1)."""
    posterior = vae.encode(images)
    recon = vae.decode(posterior.mean + posterior.std * eps)
    kl = 0.5 * (posterior.mean.sqr() + posterior.logvar.exp() - 1.0 - posterior.logvar).mean()
    return jt.nn.mse_loss(recon, images) + kl_weight * kl


def train_vae(sd, images, cfg: PretrainConfig, rng: np.random.Generator, saved=None) -> List[float]:
    """The VAE on random batches of ``images``; then ``scaling_factor`` set so the UNet sees unit-variance latents."""
    def loss_at(step: int) -> jt.Var:
        batch = [images[i] for i in rng.integers(len(images), size=cfg.vae_batch)]
        side = cfg.size // latent_factor(sd)
        eps = jt.array(rng.standard_normal((cfg.vae_batch, sd.vae.config["latent_channels"], side, side),
                                           dtype=np.float32))
        return vae_loss(sd.vae, to_tensor(batch, cfg.size), eps, cfg.kl_weight)

    losses = fit(list(sd.vae.parameters()), loss_at, cfg.vae_steps, cfg.vae_lr, (0.9, 0.999), 0.0, 1e-8,
                 desc="toy VAE", saved=saved)
    means = np.concatenate([mean for mean, _ in encode_moments(sd, images[:256], cfg.size, batch=ENCODE_BATCH)])
    sd.vae.config["scaling_factor"] = float(1.0 / max(means.std(), 1e-6))
    return losses


def train_denoiser(sd, images, captions: List[str], cfg: PretrainConfig, rng: np.random.Generator,
                   saved=None) -> List[float]:
    """The text encoder and the UNet together, on the VAE's posterior samples (v-prediction, as SD 2.x)."""
    moments = encode_moments(sd, images, cfg.size, batch=ENCODE_BATCH)
    ids = token_ids(sd, list(captions) + [""])  # tokenized once; a step's texts are rows of it ("" the last)
    params = list(sd.unet.parameters()) + list(sd.text_encoder.parameters())

    def loss_at(step: int) -> jt.Var:
        picks = rng.integers(len(images), size=cfg.denoiser_batch)
        rows = [len(captions) if rng.random() < cfg.caption_drop else i for i in picks]
        latents = sample_latents(sd, [moments[i] for i in picks], rng)
        return denoising_loss(sd, latents, sd.text_encoder(jt.array(ids[rows])), rng)

    return fit(params, loss_at, cfg.denoiser_steps, cfg.denoiser_lr, (0.9, 0.999), 1e-2, 1e-8, desc="toy denoiser",
               lr_factor=lambda step: warmup_cosine(step, cfg.warmup_steps, cfg.denoiser_steps), saved=saved)


def warmup_cosine(step: int, warmup: int, steps: int) -> float:
    """The learning-rate factor of step ``step``: linear warm-up over ``warmup`` steps, then a cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def save_sd(sd, folder, source: Path = TOY_CONFIGS, dtype: str = "float16") -> Path:
    """``sd`` as a diffusers-layout folder: the configs of ``source`` (the VAE's with its scaling factor), the
    CLIP tokenizer files and ``dtype`` ``.safetensors`` weights (float16 halves the committed toy model; it loads
    in any precision). ``folder`` must not exist."""
    folder = Path(folder)
    if folder.exists():
        raise ModelLoadError(f"{folder} already exists; not replacing it (choose another path or delete it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for rel in CONFIG_FILES + ("model_index.json",):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, tmp / rel)
        write_clip_vocab(tmp / "tokenizer")
        vae_config = dict(json.loads((source / "vae" / "config.json").read_text()),
                          scaling_factor=sd.vae.config["scaling_factor"])
        (tmp / "vae" / "config.json").write_text(json.dumps(vae_config, indent=2) + "\n", encoding="utf-8")
        for name, (stem, _) in MODELS.items():
            state = {k: v.numpy().astype(dtype) for k, v in getattr(sd, name).state_dict().items()}
            save_safetensors(tmp / name / f"{stem}.safetensors", state).chmod(0o644)
        tmp.chmod(0o755)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class SavedProgress:
    """A pretraining's progress in one file beside its output, ``<out>.partial.safetensors``: every weight of the
    model, the running stage's AdamW moments, the stage and step, the losses so far and the random generator's
    state, replaced atomically every :data:`SAVE_EVERY` steps and at the end of the VAE stage. The same command,
    rerun, loads it and continues; a file saved under another config is refused, never continued."""

    def __init__(self, out: Path, cfg: PretrainConfig, sd, rng: np.random.Generator):
        self.path = out.with_name(out.name + ".partial.safetensors")
        self.config, self.sd, self.rng = json.dumps(asdict(cfg)), sd, rng
        self.stage, self.step, self.curves, self.adam = "vae", 0, {}, {}
        if self.path.exists():
            self._load()

    def _load(self):
        meta = load_safetensors_metadata(self.path)
        if meta.get("config") != self.config:
            raise ConfigError(f"{self.path}: the saved progress of a pretraining with another config; run with that "
                              f"config to continue it, or delete the file to start afresh")
        tensors = load_safetensors(self.path)
        for name in MODELS:
            getattr(self.sd, name).load_state_dict(
                {key.split(".", 1)[1]: value for key, value in tensors.items() if key.split(".", 1)[0] == name})
        self.adam = {key: value for key, value in tensors.items() if key.startswith("adam.")}
        self.sd.vae.config["scaling_factor"] = float(meta["scaling_factor"])
        self.rng.bit_generator.state = json.loads(meta["rng"])
        self.stage, self.step, self.curves = meta["stage"], int(meta["step"]), json.loads(meta["curves"])

    def save(self, stage: str, step: int, losses: List[float], optimizer=None):
        """The model now, at ``step`` of ``stage`` with that stage's ``losses`` (and its ``optimizer``'s moments)."""
        tensors = {f"{name}.{key}": value.numpy() for name in MODELS
                   for key, value in getattr(self.sd, name).state_dict().items()}
        if optimizer is not None:
            for i, (m, v) in enumerate(zip(optimizer.m, optimizer.v)):
                tensors[f"adam.m.{i}"], tensors[f"adam.v.{i}"] = m.numpy(), v.numpy()
        meta = {"config": self.config, "stage": stage, "step": str(step),
                "curves": json.dumps(dict(self.curves, **{stage: losses})),
                "rng": json.dumps(self.rng.bit_generator.state),
                "scaling_factor": repr(self.sd.vae.config["scaling_factor"])}
        save_safetensors(self.path, tensors, meta, overwrite=True)

    def of(self, stage: str) -> "_Stage":
        """What :func:`styleblend.training.fit` needs to continue ``stage`` and to save its progress."""
        return _Stage(self, stage)


@dataclass
class _Stage:
    """One stage of a :class:`SavedProgress`, as :func:`styleblend.training.fit` uses it."""
    progress: SavedProgress
    name: str

    def restore(self, optimizer):
        saved = self.progress
        if saved.stage != self.name or not saved.step:
            return 0, []
        count = len(optimizer.params)
        optimizer.load([saved.adam[f"adam.m.{i}"] for i in range(count)],
                       [saved.adam[f"adam.v.{i}"] for i in range(count)], saved.step)
        return saved.step, list(saved.curves[self.name])

    def after_step(self, done: int, losses: List[float], optimizer):
        if done % SAVE_EVERY == 0:
            self.progress.save(self.name, done, losses, optimizer)


def pretrain_toy(out, config=None, smoke: bool = False, echo=print) -> Path:
    """Pretrain the toy model and write it to ``out`` (a new folder) with ``training_curves.json``; an interrupted
    run's saved progress (:class:`SavedProgress`) is continued."""
    out = Path(out)
    if out.exists():
        raise ModelLoadError(f"{out} already exists; not replacing it (choose another path or delete it)")
    cfg = PretrainConfig.load(config, smoke)
    rng = np.random.default_rng(cfg.seed)
    pairs = pretraining_pairs(cfg.pairs, cfg.seed, cfg.size, cfg.styles, cfg.spread)
    images, captions = [image for image, _ in pairs], [caption for _, caption in pairs]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:  # the seeded initial weights
        sd = load_sd(write_random_sd(Path(scratch) / "init", configs=TOY_CONFIGS, seed=cfg.seed, dtype="float32"))
        saved = SavedProgress(out, cfg, sd, rng)
        if saved.step or saved.stage != "vae":
            echo(f"continuing {saved.path}: {saved.stage} stage, step {saved.step}")
        if saved.stage == "vae":
            saved.curves["vae"] = train_vae(sd, images, cfg, rng, saved.of("vae"))
            saved.save("denoiser", 0, [])
        curves = saved.curves
        echo(f"VAE: loss {curves['vae'][0]:.4f} -> {curves['vae'][-1]:.4f}; latent scaling factor "
             f"{sd.vae.config['scaling_factor']:.4f}")
        curves["denoiser"] = train_denoiser(sd, images, captions, cfg, rng, saved.of("denoiser"))
        echo(f"text encoder + UNet: loss {curves['denoiser'][0]:.4f} -> {curves['denoiser'][-1]:.4f}")
        save_sd(sd, out)
    text = json.dumps({"config": asdict(cfg), **curves}) + "\n"
    write_atomic(out / CURVES_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    saved.path.unlink()
    return out
