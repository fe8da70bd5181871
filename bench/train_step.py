"""Training step times at the recipe's 768² (batch 1) for the three trainings, and the minutes one style costs:
textual inversion (<F> row), UNet LoRA, text-encoder LoRA (coarse), each a forward + backward through the
UNet with the package's own loss and AdamW (`styleblend.training.denoising_loss` / `fit`).
--dtype float16 = the recipe's `precision: float16` (UNet and VAE weights in float16, the text encoder and every
trained parameter in float32, the loss scaled). --staged = the recipe's `staged_backward: true` (gradients one
UNet stage at a time). STYLEBLEND_FUSED_BACKWARD=1 trains through the fused attention (forward kernel + blockwise
backward) instead of the naive form.

    STYLEBLEND_DEVICE=cuda python bench/train_step.py --model /tmp/sd21-random --dtype float32 [--staged]
    python bench/train_step.py --model tiny --resolution 512 --steps 2 [--staged]      # CPU: peak_rss_mb
--impl diffusers: the same three trainings on diffusers + PyTorch, as diffusers' training scripts run them
(LoRA of the recipe's rank on the same layers; textual inversion on the whole token table, as its script; float16 =
autocast with float16 frozen weights, float32 trained ones and a gradient scaler, as ``mixed_precision="fp16"``).
Prints one JSON line (random weights: timings valid); ``<training>_finite`` = its losses and trained parameters
stayed finite (a float16 overflow would show there). Peak memory is the process's over all three trainings, so
compare modes in separate runs.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from unet_step import CONFIG, GpuPeak, diffusers_config, gpu_name, jittor_memory, levers

from styleblend.config import load_recipe

TRAININGS = ["textual_inversion", "unet_lora", "text_encoder_lora"]


def recipe_steps(recipe) -> dict:
    """Each training's step count in ``recipe``: what one style costs is these times the ms a step."""
    return {"textual_inversion": recipe.fine.ti_steps, "unet_lora": recipe.fine.lora_steps,
            "text_encoder_lora": recipe.coarse.steps}
# textual inversion as the original trains it: AdamW on the whole token table (the package trains the one row,
# `CLIPTextModel.trainable_row`; the same update). Only with --only: it is the measurement of what that saves.
WHOLE_TABLE = "textual_inversion_table"


def costliest(report, n: int) -> list:
    """The ``n`` costliest rows of a Jittor profile as [ms, count, "op.kind+op.kind… dtype"]."""
    head, rows = report[0], report[1:]
    total, count, name = head.index("TotalTime"), head.index("Count"), head.index("Name")
    rows = sorted(rows, key=lambda r: -float(r[total]))[:n]
    return [[round(float(r[total]) / 1e6, 2), int(r[count]), op_label(r[name])] for r in rows]


def op_label(key: str) -> str:
    """``«opkey0:binary«Tx:float16«OP:multiply«opkey1:reduce…`` → ``binary.multiply+reduce… float16``."""
    ops, dtype = [], ""
    for part in key.split("«"):
        if part.startswith("opkey"):
            ops.append(part.split(":", 1)[1])
        elif part.startswith("OP:") and ops:
            ops[-1] += "." + part[3:]
        elif part.startswith("Tx:") and not dtype:
            dtype = part[3:]
    return ("+".join(ops) or key[:60]) + " " + dtype


def bench_jittor(a) -> dict:
    """The three trainings through the package (module docstring)."""
    from styleblend.runtime import start
    jt = start(0)
    jt.flags.profile_memory_enable = int(a.memory)
    from styleblend.training import denoising_loss, fit, loss_scale
    from styleblend.sd.loading import load_sd, write_random_sd, write_tiny_sd
    from styleblend.memory import peak_rss_mb
    from styleblend.sd.models.lora import add_lora, lora_parameters
    from styleblend.sd.sampling import encode_prompt
    from styleblend.sd.tokens import add_token

    if a.model == "tiny":
        a.model = str(write_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd", seed=0))
    elif not Path(a.model).exists():
        write_random_sd(a.model, dtype="float16")
    recipe = load_recipe()
    sd = load_sd(a.model, dtype=a.dtype)
    token_id = add_token(sd.tokenizer, sd.text_encoder, recipe.fine.token, recipe.fine.init_token)
    rng = np.random.default_rng(0)
    resolution = a.resolution or recipe.fine.resolution
    size = resolution // 8
    latents = jt.array(rng.standard_normal((1, 4, size, size), dtype=np.float32)).cast(a.dtype)
    prompt = [recipe.fine.prompt_template.format(caption="apple", token=recipe.fine.token)]
    te_lora = sd.text_encoder.clone()
    add_lora(te_lora, recipe.coarse.lora_targets, recipe.coarse.lora_rank, recipe.coarse.lora_alpha)
    with jt.no_grad():
        context = encode_prompt(sd, prompt)
    add_lora(sd.unet, recipe.fine.lora_targets, recipe.fine.lora_rank, recipe.fine.lora_alpha)
    result = {"impl": "jittor", "dtype": a.dtype, "resolution": resolution, "staged": a.staged,
              "memory": a.memory, **levers()}
    with GpuPeak() as peak, contextlib.ExitStack() as scope:
        jobs = {
            WHOLE_TABLE: ([sd.text_encoder.token_embedding_weight],
                          lambda s: denoising_loss(sd, latents, encode_prompt(sd, prompt), rng, a.staged)),
            "unet_lora": (lora_parameters(sd.unet), lambda s: denoising_loss(sd, latents, context, rng, a.staged)),
            "text_encoder_lora": (lora_parameters(te_lora), lambda s: denoising_loss(
                sd, latents, encode_prompt(sd, prompt, te_lora), rng, a.staged)),
        }
        if "textual_inversion" in a.only:  # its copy of the text encoder only where it runs: peaks stay comparable
            ti_encoder = sd.text_encoder.clone()
            row = scope.enter_context(ti_encoder.trainable_row(token_id))
            jobs["textual_inversion"] = ([row], lambda s: denoising_loss(
                sd, latents, encode_prompt(sd, prompt, ti_encoder), rng, a.staged))
        for name in a.only:
            params, loss_fn = jobs[name]

            def train(steps: int, desc: str) -> list:
                losses = fit(params, loss_fn, steps, 1e-4, (0.9, 0.999), 0.0, 1e-8, desc, scale=loss_scale(sd))
                jt.sync_all(True)
                return losses

            train(2, f"{name} warm-up")
            t0 = time.perf_counter()
            losses = train(a.steps, name)
            result[f"{name}_ms"] = round((time.perf_counter() - t0) * 1000 / a.steps, 1)
            if a.profile:
                with jt.profile_scope() as report:
                    train(1, f"{name} profiled")
                result[f"{name}_top_ops"] = costliest(report, a.profile)
            result[f"{name}_finite"] = bool(np.isfinite(losses).all()
                                            and all(np.isfinite(q.numpy()).all() for q in params))
    if a.memory:
        result.update(jittor_memory(jt))
    result["peak_gpu_mb"] = peak.peak
    result["peak_rss_mb"] = round(peak_rss_mb())
    return result


def bench_diffusers(a) -> dict:
    """The three trainings on diffusers + PyTorch as diffusers' training scripts run them (module docstring), on
    the SD 2.1 architecture with random weights, the recipe's LoRA layers and ranks, the same step as ours."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    recipe, device, half = load_recipe(), torch.device(a.device), a.dtype == "float16"
    folder = CONFIG.parents[1]
    unet = UNet2DConditionModel.from_config(diffusers_config(folder / "unet")).to(device)
    unet.requires_grad_(False).to(torch.float16 if half else torch.float32)  # trained LoRA weights stay float32
    encoder = CLIPTextModel(CLIPTextConfig.from_json_file(folder / "text_encoder" / "config.json")).to(device)
    encoder.requires_grad_(False)
    te_lora = copy.deepcopy(encoder)
    scheduler = DDPMScheduler.from_config(diffusers_config(folder / "scheduler"))
    resolution = a.resolution or recipe.fine.resolution
    latents = torch.randn(1, 4, resolution // 8, resolution // 8, device=device, dtype=unet.dtype)
    tokens = torch.randint(0, encoder.config.vocab_size, (1, encoder.config.max_position_embeddings), device=device)
    with torch.no_grad():
        context = encoder(tokens)[0]
    table = encoder.get_input_embeddings().weight
    unet_lora = torch_lora(unet, recipe.fine.lora_targets, recipe.fine.lora_rank, recipe.fine.lora_alpha)
    jobs = {"textual_inversion": ([table], lambda: encoder(tokens)[0]),
            "unet_lora": (unet_lora, lambda: context),
            "text_encoder_lora": (torch_lora(te_lora, recipe.coarse.lora_targets, recipe.coarse.lora_rank,
                                             recipe.coarse.lora_alpha), lambda: te_lora(tokens)[0])}
    result = {"impl": "diffusers", "dtype": a.dtype, "resolution": resolution}
    with GpuPeak() as peak:
        for name in a.only:
            if name not in jobs:
                raise SystemExit(f"train_step.py --impl diffusers: no {name} (its textual inversion trains the "
                                 "whole token table, as diffusers' script)")
            params, context_of = jobs[name]
            for q in params:
                q.requires_grad_(True)
            optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
            scaler = torch.amp.GradScaler(device.type, enabled=half)
            kept = table.detach().clone() if name == "textual_inversion" else None

            def train(steps: int) -> list:
                losses = []
                for _ in range(steps):
                    t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), device=device)
                    noise = torch.randn_like(latents)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=half):
                        out = unet(scheduler.add_noise(latents, noise, t), t, context_of()).sample
                        loss = torch.nn.functional.mse_loss(out.float(), scheduler.get_velocity(latents, noise, t)
                                                            .float())
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    if kept is not None:  # diffusers' script puts back every row but the new token's
                        with torch.no_grad():
                            table[:-1] = kept[:-1]
                    losses.append(loss.item())
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return losses

            train(2)
            t0 = time.perf_counter()
            losses = train(a.steps)
            result[f"{name}_ms"] = round((time.perf_counter() - t0) * 1000 / a.steps, 1)
            result[f"{name}_finite"] = bool(np.isfinite(losses).all()
                                            and all(torch.isfinite(q).all().item() for q in params))
            for q in params:
                q.requires_grad_(False)
    result["peak_gpu_mb"] = peak.peak
    if device.type == "cuda":
        result["torch_live_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return result


def torch_lora(model, targets, rank: int, alpha: float) -> list:
    """LoRA on every linear layer of ``model`` whose name ends with one of ``targets`` (what peft's LoraConfig
    with ``target_modules`` does): float32 down/up weights beside the frozen layer; returns the new weights."""
    import torch

    class LoRALinear(torch.nn.Module):
        def __init__(self, base: torch.nn.Linear):
            super().__init__()
            self.base, self.scale = base, alpha / rank
            self.down = torch.nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
            self.up = torch.nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
            torch.nn.init.zeros_(self.up.weight)

        def forward(self, x):
            return self.base(x) + self.scale * self.up(self.down(x.to(self.down.weight.dtype))).to(x.dtype)

    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]
    params = []
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        wrapped = LoRALinear(module)
        setattr(model.get_submodule(parent_name), child, wrapped)
        params += [wrapped.down.weight, wrapped.up.weight]
    for q in params:
        q.requires_grad_(False)
    return params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=["jittor", "diffusers"], default="jittor")
    p.add_argument("--model", default="/tmp/sd21-random", help='a diffusers folder (written with random SD 2.1 '
                   'weights when missing) or "tiny"; --impl diffusers builds the SD 2.1 architecture itself')
    p.add_argument("--dtype", choices=["float16", "float32"], default="float32")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--profile", type=int, default=0, help="also list each training's N costliest fused ops")
    p.add_argument("--staged", action="store_true", help="gradients one UNet stage at a time")
    p.add_argument("--resolution", type=int, default=0, help="image size (0 = the recipe's)")
    p.add_argument("--memory", action="store_true", help="Jittor's memory profiler (slower): its peak of live "
                   "variables, beside nvidia-smi's peak")
    p.add_argument("--only", nargs="+", choices=TRAININGS + [WHOLE_TABLE], default=TRAININGS,
                   help="which trainings to run")
    p.add_argument("--device", default="cuda", help="--impl diffusers: the PyTorch device")
    a = p.parse_args()
    result = bench_jittor(a) if a.impl == "jittor" else bench_diffusers(a)
    result["device"] = gpu_name()
    steps = recipe_steps(load_recipe())
    if all(f"{k}_ms" in result for k in TRAININGS):
        result["training_minutes"] = round(sum(result[f"{k}_ms"] * n for k, n in steps.items()) / 60000, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
