"""How much the toy model's denoiser can learn of an object's shape from its name, by how far objects stray from the
picture's centre (``toyworld.sample_scene``'s ``spread``):

    python bench/toy_spread.py                             # the object word's share of the mask's variance
    python bench/toy_spread.py --train 1500 --spread 0.06    # and a text encoder + UNet trained at that spread
    python bench/toy_spread.py --model toy --spread 0.5      # or a pretrained toy model, measured the same way

With ``--train N`` the text encoder and the UNet are trained from scratch for N steps (``pretrain.train_denoiser``,
``configs/toy/pretrain.yaml``'s settings, with ``--batch``, ``--lr`` and a 50-step warm-up) on 4096 pairs in the
flat, outline and pixel styles, on the latents of the committed toy model's VAE. Then, on 64 new flat pictures, the
denoising loss with the right caption and with another object's (the same noise): the wider the gap, the more the
UNet uses the object word. ``--sheet FILE`` also saves samples of the ten objects ("A red <object> on a blue
background, flat."). ``--model`` measures a pretrained model instead (a folder, or ``toy``), and how often the toy
judge (``styleblend.toyjudge``) finds the prompt's object and colour in 40 of its images (each object 4 times, a
random colour on a random background, 30 DDIM steps, guidance 7.5; chance is 0.1 for objects). Prints one JSON
line. Training is meant for a GPU (``STYLEBLEND_DEVICE=cuda``): on a 2-core CPU, 400 steps at batch 32 take half an
hour, too few for the text encoder to learn even the colours; measuring a model takes about 15 minutes there.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from styleblend.runtime import start

GAP_TIMESTEPS = (900, 700, 500)


def swap_gap(jt, sd, spread: float) -> dict:
    """The denoising loss at each of :data:`GAP_TIMESTEPS` on 64 new flat pictures at ``spread``, with the right
    caption and with another object's."""
    from styleblend.sd.sampling import token_ids
    from styleblend.toyworld import OBJECTS, draw, sample_scene
    from styleblend.training import encode_moments, sample_latents

    rng = np.random.default_rng(123)
    scenes = [sample_scene(rng, spread=spread) for _ in range(64)]

    wrong = [replace(s, obj=OBJECTS[(OBJECTS.index(s.obj) + 1 + rng.integers(len(OBJECTS) - 1)) % len(OBJECTS)])
             for s in scenes]
    latents = sample_latents(sd, encode_moments(sd, [draw(s, "flat") for s in scenes], 64, batch=64), rng)
    noise = jt.array(rng.standard_normal(tuple(latents.shape), dtype=np.float32))
    result = {}
    with jt.no_grad():
        for step in GAP_TIMESTEPS:
            t = np.full(len(scenes), step, dtype=np.int64)
            noisy, target = sd.scheduler.add_noise(latents, noise, t), sd.scheduler.training_target(latents, noise, t)
            for name, captions in (("right", scenes), ("wrong", wrong)):
                context = sd.text_encoder(jt.array(token_ids(sd, [f"A {s.caption}, flat." for s in captions])))
                result[f"loss_{name}_t{step}"] = round(((sd.unet(noisy, t, context) - target) ** 2).mean().item(), 4)
    return result


def judged(sd, seeds=(2, 3, 4, 5)) -> dict:
    """How often the toy judge sees the prompt's object and colour in the model's images ("A <colour> <object> on
    a <colour> background, flat.", each object once per seed)."""
    from styleblend.sd.sampling import text_to_image
    from styleblend.toyjudge import judge, load_judge
    from styleblend.toyworld import OBJECTS, sample_scene

    net, hits = load_judge(), {"object": [], "colour": []}
    for seed in seeds:
        scenes = [sample_scene(np.random.default_rng(seed * 100 + k), obj=obj) for k, obj in enumerate(OBJECTS)]
        images = text_to_image(sd, [f"A {s.caption}, flat." for s in scenes], steps=30, seed=seed, height=64,
                               width=64)
        seen = judge(net, images)
        hits["object"] += [v == s.obj for v, s in zip(seen["object"], scenes)]
        hits["colour"] += [v == s.colour for v, s in zip(seen["colour"], scenes)]
    return {f"{head}_accuracy": round(float(np.mean(v)), 3) for head, v in hits.items()}


def sheet(sd, path: Path) -> None:
    from PIL import Image
    from styleblend.sd.sampling import text_to_image
    from styleblend.toyworld import OBJECTS

    out = Image.new("RGB", (64 * len(OBJECTS), 128))
    prompts = [f"A red {obj} on a blue background, flat." for obj in OBJECTS]
    for row in range(2):
        for col, image in enumerate(text_to_image(sd, prompts, steps=30, seed=row + 2, height=64, width=64)):
            out.paste(image, (64 * col, 64 * row))
    out.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spread", type=float, default=None, help="one spread (default: a few, share only)")
    parser.add_argument("--train", type=int, default=0, help="train the text encoder + UNet this many steps")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", help="measure this pretrained model (a folder, or toy) instead of training one")
    parser.add_argument("--sheet", type=Path, help="save samples of the ten objects here (with --train or --model)")
    args = parser.parse_args()
    from styleblend.toyworld import ANYWHERE, object_share

    spreads = [args.spread] if args.spread is not None else [ANYWHERE, 0.12, 0.08, 0.06, 0.0]
    if args.model:
        if len(spreads) != 1:
            parser.error("--model needs one --spread (of the pictures its losses are measured on)")
        print(json.dumps(measure(start(0), args.model, spreads[0], args)))
        return
    if not args.train:
        print(json.dumps({"object_share": {str(s): round(object_share(s), 3) for s in spreads}}))
        return
    if len(spreads) != 1:
        parser.error("--train needs one --spread")
    print(json.dumps(train(start(0), spreads[0], args)))


def measure(jt, model: str, spread: float, args) -> dict:
    from styleblend.sd.loading import load_sd, resolve_model

    sd = load_sd(resolve_model(model))
    result = {"model": model, "spread": spread, **swap_gap(jt, sd, spread), **judged(sd)}
    if args.sheet:
        sheet(sd, args.sheet)
    return result


def train(jt, spread: float, args) -> dict:
    from styleblend import pretrain
    from styleblend.sd.loading import load_sd, resolve_model, write_random_sd
    from styleblend.toyworld import object_share, pretraining_pairs

    sd = load_sd(resolve_model("toy"))
    with tempfile.TemporaryDirectory() as scratch:
        fresh = load_sd(write_random_sd(Path(scratch) / "init", configs=pretrain.TOY_CONFIGS, seed=0, dtype="float32"))
    sd.unet, sd.text_encoder = fresh.unet, fresh.text_encoder
    cfg = replace(pretrain.PretrainConfig.load(), pairs=4096, styles=("flat", "outline", "pixel"), spread=spread,
                  denoiser_steps=args.train, denoiser_batch=args.batch, denoiser_lr=args.lr, warmup_steps=50)
    images, captions = zip(*pretraining_pairs(cfg.pairs, cfg.seed, cfg.size, cfg.styles, cfg.spread))
    t0 = time.perf_counter()
    losses = pretrain.train_denoiser(sd, list(images), list(captions), cfg, np.random.default_rng(cfg.seed))
    result = {"spread": spread, "object_share": round(object_share(spread), 3), "steps": args.train,
              "batch": args.batch, "lr": args.lr, "train_s": round(time.perf_counter() - t0),
              "loss_last_50": round(float(np.mean(losses[-50:])), 4)}
    result.update(swap_gap(jt, sd, spread))
    if args.sheet:
        sheet(sd, args.sheet)
    return result


if __name__ == "__main__":
    main()
