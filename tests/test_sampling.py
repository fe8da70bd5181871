"""Sampling on the tiny model: text-to-image equals diffusers' StableDiffusionPipeline; SDEdit; prompts."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from styleblend.sd import sampling
from styleblend.errors import ConfigError
from styleblend.sd.loading import load_sd, write_tiny_sd

import jittor as jt  # noqa: E402  (after styleblend)
from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("sampling") / "tiny-sd", seed=0)


@pytest.fixture(scope="module")
def sd(folder):
    return load_sd(folder)


@pytest.fixture(scope="module")
def picture():
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([x * 4, y * 4, np.where((x // 16 + y // 16) % 2, 230, 30)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


class SpyUNet:
    """Records the timesteps the sampler asks the UNet about."""

    def __init__(self, unet):
        self.unet, self.config, self.timesteps = unet, unet.config, []

    def __call__(self, sample, t, context):
        self.timesteps.append(t)
        return self.unet(sample, t, context)


def test_text_to_image_equals_diffusers(sd, folder):
    latents = sampling.initial_latents(3, 1, SIZE, SIZE)
    final = {}
    images = sampling.text_to_image(sd, "a red house by the sea", negative_prompt="blurry", steps=10,
                                    guidance=7.5, height=SIZE, width=SIZE, latents=latents,
                                    callback=lambda i, t, x, x0: final.update(i=i, latents=x))
    assert final["i"] == 9
    ours = np.clip(sampling.decode_latents(sd, final["latents"]).numpy().transpose(0, 2, 3, 1) / 2 + 0.5, 0, 1)

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red house by the sea", negative_prompt="blurry", num_inference_steps=10, guidance_scale=7.5,
               height=SIZE, width=SIZE, latents=torch.from_numpy(latents.numpy()), output_type="np").images
    assert ours.shape == ref.shape == (1, SIZE, SIZE, 3)
    assert np.abs(ours - ref).max() <= 1e-4
    assert ref.std() > 0.01  # a real image, not a constant that any sampler would match
    pil = np.asarray(images[0]).astype(int)
    assert np.abs(pil - (ref[0] * 255).round()).max() <= 1


def test_seeds_decide_the_image(sd):
    def run(seed):
        return np.stack([np.asarray(im) for im in sampling.text_to_image(
            sd, ["a cat", "a dog"], steps=2, height=SIZE, width=SIZE, seed=seed)])

    first = run(1)  # Jittor's generator gives seeds 0 and 1 the same numbers (see initial_latents)
    assert first.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(run(1), first)
    assert np.abs(run(2).astype(int) - first).mean() > 1


ORIGINAL_NOISE = """
import sys
import numpy as np
import styleblend.backend  # this project's Jittor setup; then the original entry's test.py, verbatim:
import jittor as jt

def randn_latents(seed, shape=(1, 4, 96, 96)):
    jt.set_global_seed(seed)
    latents = jt.randn(shape)
    str(latents)
    return latents

np.save(sys.argv[1], np.stack([randn_latents(seed).numpy() for seed in (818, 2034)]))
"""


def test_initial_latents_are_the_original_entrys(tmp_path):
    """The hand-picked seeds of the original entry (configs/blend/B.json) give its noise: the original's own
    code, run in a fresh CPU process, draws what ``initial_latents`` draws here after other random work (here
    on a GPU too, with ``STYLEBLEND_DEVICE=cuda``)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "original.npy"  # the original draws before it switches CUDA on: a CPU process
    env = dict(os.environ, STYLEBLEND_DEVICE="cpu")
    subprocess.run([sys.executable, "-c", ORIGINAL_NOISE, str(out)], check=True, timeout=600, env=env)
    sampling.initial_latents(5, 2, 64, 48)  # earlier draws must not matter
    ours = np.stack([sampling.initial_latents(seed, 1, 768, 768).numpy() for seed in (818, 2034)])
    np.testing.assert_array_equal(ours, np.load(out))
    assert ours.shape == (2, 1, 4, 96, 96) and abs(float(ours.std()) - 1) < 0.01


def test_image_to_image_is_sdedit(sd, picture):
    pixels = sampling.to_tensor([picture], SIZE)
    with jt.no_grad():
        latents = sd.vae.encode(pixels).mean * sd.vae.config["scaling_factor"]
        round_trip = np.asarray(sampling.to_pil(sampling.decode_latents(sd, latents))[0]).astype(int)
    spy = SpyUNet(sd.unet)
    spied = dataclasses.replace(sd, unet=spy)

    kept = np.asarray(sampling.image_to_image(spied, [picture], "a painting", strength=0.0, steps=4,
                                              sample_posterior=False)[0])
    assert spy.timesteps == []
    np.testing.assert_array_equal(kept, round_trip)
    sampled = [np.asarray(sampling.image_to_image(sd, [picture], "x", strength=0.0, seed=s)[0]).astype(int)
               for s in (3, 3, 4)]  # a posterior sample (the original's SDEdit), seeded
    np.testing.assert_array_equal(sampled[0], sampled[1])
    assert np.abs(sampled[0] - round_trip).mean() > 0 and np.abs(sampled[2] - sampled[0]).mean() > 0

    edit = [np.asarray(sampling.image_to_image(spied, [picture], "a painting", strength=0.5, steps=4, seed=s)[0])
            for s in (1, 1, 2)]
    # 4 leading steps with offset 1 are 751, 501, 251, 1; strength 0.5 starts at index 4 - int(2.0) = 2
    assert spy.timesteps[:2] == [251, 1]
    np.testing.assert_array_equal(edit[0], edit[1])
    assert np.abs(edit[0] - round_trip).mean() > 1
    assert np.abs(edit[2].astype(int) - edit[0]).mean() > 0.1


def test_image_to_image_rejects_bad_arguments(sd, picture):
    with pytest.raises(ConfigError, match="strength"):
        sampling.image_to_image(sd, [picture], "x", strength=1.5)
    with pytest.raises(ConfigError, match="60x64"):
        sampling.image_to_image(sd, [picture], "x", size=(60, 64))
    with pytest.raises(ConfigError, match="2 prompts"):
        sampling.image_to_image(sd, [picture], ["x", "y"])


def test_long_prompt_warns_and_is_truncated(sd):
    long = "a very long prompt " * 30
    with pytest.warns(UserWarning, match="a very long prompt"):
        embeddings = sampling.encode_prompt(sd, ["short", long])
    assert tuple(embeddings.shape) == (2, 77, sd.text_encoder.config["hidden_size"])


def test_pil_tensor_round_trip(picture):
    tensor = sampling.to_tensor([picture, picture.convert("L")], (SIZE, SIZE))
    assert tuple(tensor.shape) == (2, 3, SIZE, SIZE)
    assert -1 <= tensor.numpy().min() and tensor.numpy().max() <= 1
    back = sampling.to_pil(tensor)
    np.testing.assert_array_equal(np.asarray(back[0]), np.asarray(picture))
    assert tuple(sampling.to_tensor([picture], (32, 16)).shape) == (1, 3, 16, 32)
