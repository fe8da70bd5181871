"""One full StyleBlend image at the recipe's size (768², 30 DDIM steps, both branches, injection, VAE decode):
seconds per image and peak GPU memory, on a full SD 2.1-architecture folder with random weights; ours, or the same
job on diffusers + PyTorch (the baseline). With --sdedit, also one SDEdit candidate of the coarse style's data
(image-to-image, the recipe's 20 steps × strength 0.8) and the minutes of a style's SDEdit data.

    STYLEBLEND_DEVICE=cuda python bench/styleblend_image.py --model /tmp/sd21-random [--sdedit]  # written if absent
    python bench/styleblend_image.py --impl diffusers --model /tmp/sd21-random    # PyTorch (numpy 2) process
Prints one JSON line. Random weights: the timing is valid, the image is noise. The diffusers job: two text
encoders (the second stands for the coarse one; no LoRA), batch 4 = [uncond CSB, uncond FSB, cond CSB, cond FSB]
through SDPA with the queries (CSB → FSB) and keys/values (FSB → CSB) exchanged in every self-attention layer at
every step (an upper bound on the exchange's cost; ours exchanges in the recipe's layers and steps), no UNet LoRA
(ours runs a rank-4 one), both branches decoded as ours does. --allocator / --gc: the same image under other Jittor
allocator flags, or with the allocator's cache returned after each image (bench/run.sh sweeps them).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from unet_step import GpuPeak, gpu_name, jittor_memory, levers

from styleblend.config import load_recipe

B_IMAGES_PER_STYLE = 3  # the B set's reference images per style (SDEdit makes candidates of each)


def jittor_images(a, recipe) -> dict:
    # Jittor reads its allocator flags from the environment once, when it starts (before this import)
    os.environ.update(flag.split("=", 1) for flag in a.allocator.split())
    from styleblend.runtime import start
    jt = start(0)
    jt.flags.profile_memory_enable = int(a.memory)
    from styleblend.blend import blend_sample
    from styleblend.sd.loading import load_sd, write_random_sd
    from styleblend.sd.models.lora import add_lora
    from styleblend.sd.tokens import add_token

    if not Path(a.model).exists():
        write_random_sd(a.model, dtype=a.dtype)
    sd = load_sd(a.model, dtype=a.dtype)
    for token, init in ((recipe.coarse.token, recipe.coarse.init_token), (recipe.fine.token, recipe.fine.init_token)):
        add_token(sd.tokenizer, sd.text_encoder, token, init)
    coarse_te = sd.text_encoder.clone()
    add_lora(coarse_te, recipe.coarse.lora_targets, recipe.coarse.lora_rank, recipe.coarse.lora_alpha)
    add_lora(sd.unet, recipe.fine.lora_targets, recipe.fine.lora_rank, recipe.fine.lora_alpha)

    def image(i: int) -> None:
        out = blend_sample(sd, coarse_te, "Ring", recipe.blend.params, recipe.blend, seed=i,
                           fine_token=recipe.fine.token, coarse_token=recipe.coarse.token)
        out.fsb.load()
        if a.gc:
            jt.gc()

    result = {**timed(image, a.images), **levers(), **({"allocator": a.allocator} if a.allocator else {}),
              **({"gc": True} if a.gc else {})}
    if a.memory:
        result.update(jittor_memory(jt))
    if a.sdedit:
        result.update(sdedit(sd, recipe.sdedit))
    return result


def sdedit(sd, cfg) -> dict:
    """Seconds of one SDEdit candidate (strength 0.8) and the minutes of a B style's candidates."""
    import numpy as np
    from PIL import Image

    from styleblend.sd.sampling import image_to_image

    ref = Image.fromarray(np.random.default_rng(0).integers(0, 255, (cfg.resolution,) * 2 + (3,), np.uint8))
    seconds = timed(lambda i: image_to_image(sd, [ref], "A ring, realistic.", cfg.negative_prompt, 0.8, cfg.steps,
                                             cfg.guidance, i, cfg.resolution), 3)["seconds"]
    return {"sdedit_seconds": seconds,
            "sdedit_minutes": round(seconds * cfg.candidates * B_IMAGES_PER_STYLE / 60, 1)}


def diffusers_images(a, recipe) -> dict:
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    dtype, cfg = getattr(torch, a.dtype), recipe.blend
    written_fp16 = any((Path(a.model) / "unet").glob("*.fp16.safetensors"))  # as write_random_sd writes float16
    load = dict(torch_dtype=dtype, variant="fp16" if written_fp16 else None)
    unet = UNet2DConditionModel.from_pretrained(a.model, subfolder="unet", **load).to(a.device).eval()
    vae = AutoencoderKL.from_pretrained(a.model, subfolder="vae", **load).to(a.device).eval()
    encoders = [CLIPTextModel.from_pretrained(a.model, subfolder="text_encoder", **load).to(a.device).eval()
                for _ in range(2)]
    tokenizer = CLIPTokenizer.from_pretrained(a.model, subfolder="tokenizer")
    scheduler = DDIMScheduler.from_pretrained(a.model, subfolder="scheduler")

    class Exchange:
        """SDPA self-attention with the CSB's queries given to the FSB and the FSB's keys/values to the CSB."""

        def __call__(self, attn, hidden, encoder_hidden_states=None, attention_mask=None, **_):
            q, k, v = attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)
            q, k, v = (t.unflatten(0, (2, 2)).clone() for t in (q, k, v))  # [uncond/cond, CSB/FSB, ...]
            q[:, 1], k[:, 0], v[:, 0] = q[:, 0], k[:, 1], v[:, 1]
            b, n, _ = hidden.shape
            q, k, v = (t.reshape(b, n, attn.heads, -1).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
            return attn.to_out[1](attn.to_out[0](out))

    unet.set_attn_processor({name: Exchange() if name.endswith("attn1.processor") else proc
                             for name, proc in unet.attn_processors.items()})

    def encode(encoder, prompts):
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(a.device)
        return encoder(ids)[0]

    def image(i: int) -> None:
        with torch.no_grad():
            csb = encode(encoders[0], [cfg.csb_negative, "A Ring in the style of <C>."])
            fsb = encode(encoders[1], [cfg.fsb_negative, "A Ring in the style of <F>."])
            context = torch.stack([csb[0], fsb[0], csb[1], fsb[1]])
            size = cfg.resolution // 8
            generator = torch.Generator(a.device).manual_seed(i)
            latent = torch.randn(1, 4, size, size, generator=generator, device=a.device, dtype=dtype)
            latents = latent.repeat(2, 1, 1, 1)
            scheduler.set_timesteps(cfg.steps)
            for t in scheduler.timesteps:
                noise = unet(latents.repeat(2, 1, 1, 1), t, context).sample
                uncond, cond = noise.chunk(2)
                latents = scheduler.step(uncond + cfg.guidance * (cond - uncond), t, latents).prev_sample
            images = vae.decode(latents / vae.config.scaling_factor).sample
            images.float().cpu()

    return timed(image, a.images, torch.cuda.synchronize if a.device == "cuda" else None)


def timed(fn, n: int, sync=None) -> dict:
    """Seconds of the first call of ``fn(i)`` (compiles) and the fastest of the others."""
    seconds = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        if sync is not None:
            sync()
        seconds.append(time.perf_counter() - t0)
    return {"seconds_first": round(seconds[0], 2), "seconds": round(min(seconds[1:] or seconds), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=["jittor", "diffusers"], default="jittor")
    p.add_argument("--model", default="/tmp/sd21-random")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--images", type=int, default=2, help="images to time (the first also compiles)")
    p.add_argument("--resolution", type=int, default=0, help="image size (0 = the recipe's; smaller: a CPU check)")
    p.add_argument("--device", default="cuda", help="diffusers only: the torch device")
    p.add_argument("--sdedit", action="store_true", help="ours only: also time SDEdit candidates")
    p.add_argument("--memory", action="store_true", help="ours only: Jittor's memory profiler (slower): its peak "
                   "of live variables, beside nvidia-smi's peak")
    p.add_argument("--allocator", default="", help="ours only: Jittor allocator flags for this process, "
                   "'use_sfrl_allocator=0 ...' (what each does to nvidia-smi's peak)")
    p.add_argument("--gc", action="store_true", help="ours only: jt.gc() after each image (returns the allocator's "
                   "cached blocks)")
    a = p.parse_args()
    if any("=" not in flag for flag in a.allocator.split()):
        p.error(f"--allocator {a.allocator!r}: give flags as name=value, e.g. use_sfrl_allocator=0")
    recipe = load_recipe()
    if a.resolution:
        recipe = replace(recipe, blend=replace(recipe.blend, resolution=a.resolution),
                         sdedit=replace(recipe.sdedit, resolution=a.resolution))
    run = jittor_images if a.impl == "jittor" else diffusers_images
    with GpuPeak() as peak:
        result = run(a, recipe)
    what = f"StyleBlend image {recipe.blend.resolution}² {recipe.blend.steps} steps"
    print(json.dumps({"impl": a.impl, "what": what, "dtype": a.dtype, "memory": a.memory, **result,
                      "peak_gpu_mb": peak.peak, "device": gpu_name()}))


if __name__ == "__main__":
    main()
