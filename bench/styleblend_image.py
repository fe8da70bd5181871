"""One full StyleBlend image at the recipe's size (768², 30 DDIM steps, both branches, injection, VAE decode):
seconds per image and peak GPU memory, on a full SD 2.1-architecture folder with random weights.

    STYLEBLEND_DEVICE=cuda python bench/styleblend_image.py --model /tmp/sd21-random   # written if absent
Prints one JSON line. Random weights: the timing is valid, the image is noise.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unet_step import GpuPeak, gpu_name, levers

from styleblend.runtime import start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="/tmp/sd21-random")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--images", type=int, default=2, help="images to time (the first also compiles)")
    a = p.parse_args()
    jt = start(0)
    from styleblend.blend import blend_sample
    from styleblend.config import load_recipe
    from styleblend.loading import load_sd, write_random_sd
    from styleblend.models.lora import add_lora
    from styleblend.tokens import add_token

    if not Path(a.model).exists():
        write_random_sd(a.model, dtype=a.dtype)
    recipe = load_recipe()
    sd = load_sd(a.model, dtype=a.dtype)
    for token, init in ((recipe.coarse.token, recipe.coarse.init_token), (recipe.fine.token, recipe.fine.init_token)):
        add_token(sd.tokenizer, sd.text_encoder, token, init)
    coarse_te = sd.text_encoder.clone()
    add_lora(coarse_te, recipe.coarse.lora_targets, recipe.coarse.lora_rank, recipe.coarse.lora_alpha)
    add_lora(sd.unet, recipe.fine.lora_targets, recipe.fine.lora_rank, recipe.fine.lora_alpha)
    seconds = []
    with GpuPeak() as peak, jt.no_grad():
        for i in range(a.images):
            t0 = time.perf_counter()
            out = blend_sample(sd, coarse_te, "Ring", recipe.blend.params, recipe.blend, seed=i,
                               fine_token=recipe.fine.token, coarse_token=recipe.coarse.token)
            out.fsb.load()
            seconds.append(time.perf_counter() - t0)
    print(json.dumps({"impl": "jittor", "what": "StyleBlend image 768² 30 steps", "dtype": a.dtype,
                      "seconds_first": round(seconds[0], 2), "seconds": round(min(seconds[1:] or seconds), 2),
                      "peak_gpu_mb": peak.peak, "device": gpu_name(), **levers()}))


if __name__ == "__main__":
    main()
