"""Training step times at the recipe's 768² (batch 1) for the three trainings, and the minutes one style costs:
textual inversion (<F> row), UNet LoRA, text-encoder LoRA (coarse), each a forward + backward through the
UNet with the package's own loss and AdamW (`styleblend.training.denoising_loss` / `fit`).
--dtype float16 = the recipe's `precision: float16` (UNet and VAE weights in float16, the text encoder and every
trained parameter in float32, the loss scaled). --staged = the recipe's `staged_backward: true` (gradients one
UNet stage at a time). STYLEBLEND_FUSED_BACKWARD=1 trains through the fused attention (forward kernel + blockwise
backward) instead of the naive form.

    STYLEBLEND_DEVICE=cuda python bench/train_step.py --model /tmp/sd21-random --dtype float32 [--staged]
    python bench/train_step.py --model tiny --resolution 512 --steps 2 [--staged]      # CPU: peak_rss_mb
Prints one JSON line (random weights: timings valid); ``<training>_finite`` = its losses and trained parameters
stayed finite (a float16 overflow would show there). Peak memory is the process's over all three trainings, so
compare modes in separate runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from unet_step import GpuPeak, gpu_name, jittor_memory, levers

TRAININGS = ["textual_inversion", "unet_lora", "text_encoder_lora"]
# textual inversion as the original trains it: AdamW on the whole token table (the package trains the one row,
# `CLIPTextModel.trainable_row`; the same update). Only with --only: it is the measurement of what that saves.
WHOLE_TABLE = "textual_inversion_table"

from styleblend.runtime import start


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="/tmp/sd21-random", help='a diffusers folder (written with random SD 2.1 '
                   'weights when missing) or "tiny"')
    p.add_argument("--dtype", choices=["float16", "float32"], default="float32")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--profile", type=int, default=0, help="also list each training's N costliest fused ops")
    p.add_argument("--staged", action="store_true", help="gradients one UNet stage at a time")
    p.add_argument("--resolution", type=int, default=0, help="image size (0 = the recipe's)")
    p.add_argument("--memory", action="store_true", help="Jittor's memory profiler (slower): its peak of live "
                   "variables, beside nvidia-smi's peak")
    p.add_argument("--only", nargs="+", choices=TRAININGS + [WHOLE_TABLE], default=TRAININGS,
                   help="which trainings to run")
    a = p.parse_args()
    jt = start(0)
    jt.flags.profile_memory_enable = int(a.memory)
    from styleblend.training import denoising_loss, fit, loss_scale
    from styleblend.config import load_recipe
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
    result = {"dtype": a.dtype, "resolution": resolution, "staged": a.staged, "memory": a.memory,
              "device": gpu_name(), **levers()}
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
    steps = {"textual_inversion": recipe.fine.ti_steps, "unet_lora": recipe.fine.lora_steps,
             "text_encoder_lora": recipe.coarse.steps}
    if set(a.only) == set(TRAININGS):
        result["training_minutes"] = round(sum(result[f"{k}_ms"] * n for k, n in steps.items()) / 60000, 1)
    if a.memory:
        result.update(jittor_memory(jt))
    result["peak_gpu_mb"] = peak.peak
    result["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
