"""float16 against float32 on the tiny model (CPU; the GPU side is in bench/): the same weights loaded with the
UNet and VAE in each dtype (the text encoder stays float32) give close predictions, samples and training.
Measured here (random tiny weights): UNet 1.2e-2 relative error; StyleBlend latents 2.4e-2 after 4 smoke steps,
images 1.3/255 mean absolute difference; UNet-LoRA gradients 2.1e-2 (of the largest), losses 3e-4. The bounds
below leave about 2× room (the UNet's 1.7×)."""
import numpy as np
import pytest

from styleblend.sd import loading
from styleblend.blend import blend_sample
from styleblend.config import load_recipe
from styleblend.sd.models.lora import add_lora
from styleblend.sd.tokens import add_token

import jittor as jt  # noqa: E402  (after styleblend)

DTYPES = ("float32", "float16")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return loading.write_tiny_sd(tmp_path_factory.mktemp("half") / "tiny-sd", seed=0)


def relative_error(x, ref):
    return float(np.abs(x - ref).max() / np.abs(ref).max())


def test_unet_prediction_in_float16_is_close_to_float32(tiny):
    rng = np.random.default_rng(5)
    x, context = rng.standard_normal((2, 4, 8, 8)), rng.standard_normal((2, 77, 32))
    out = {}
    for dtype in DTYPES:
        unet = loading.load_sd(tiny, dtype=dtype).unet
        with jt.no_grad():
            out[dtype] = unet(jt.array(x).cast(dtype), 500, jt.array(context).cast(dtype)).float32().numpy()
    assert relative_error(out["float16"], out["float32"]) < 2e-2


def test_styleblend_sample_in_float16_is_close_to_float32(tiny):
    recipe = load_recipe(smoke=True)
    latents, images = {}, {}
    for dtype in DTYPES:
        sd = loading.load_sd(tiny, dtype=dtype)
        for token, init in ((recipe.coarse.token, recipe.coarse.init_token),
                            (recipe.fine.token, recipe.fine.init_token)):
            add_token(sd.tokenizer, sd.text_encoder, token, init)
        coarse_te = sd.text_encoder.clone()
        add_lora(coarse_te, recipe.coarse.lora_targets, recipe.coarse.lora_rank, recipe.coarse.lora_alpha)
        add_lora(sd.unet, recipe.fine.lora_targets, recipe.fine.lora_rank, recipe.fine.lora_alpha)
        with jt.no_grad():
            out = blend_sample(sd, coarse_te, "Ring", recipe.blend.params, recipe.blend, seed=0,
                               fine_token=recipe.fine.token, coarse_token=recipe.coarse.token)
        latents[dtype], images[dtype] = out.latents.float32().numpy(), np.asarray(out.fsb, np.float32)
    assert relative_error(latents["float16"], latents["float32"]) < 4e-2
    assert np.abs(images["float16"] - images["float32"]).mean() < 3.0


def test_a_scaled_loss_takes_the_same_adamw_steps_and_reports_the_unscaled_loss():
    from styleblend.training import fit

    def train(scale):
        w = jt.array(np.linspace(-1, 1, 5).astype(np.float32))
        losses = fit([w], lambda s: ((w - 0.3) ** 2).sum() * 1e-3, 3, 0.1, (0.9, 0.999), 0.01, 1e-8, "test",
                     scale=scale)
        return losses, w.numpy()

    (losses, weights), (losses_scaled, weights_scaled) = train(1.0), train(1024.0)
    assert np.abs(weights - np.linspace(-1, 1, 5)).max() > 0.1, "the weights moved"
    np.testing.assert_allclose(weights_scaled, weights, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(losses_scaled, losses, rtol=1e-6)


def test_unet_lora_training_in_float16_follows_float32(tiny):
    """UNet-LoRA training through float16 UNet weights (LoRA in float32, loss scaled): the first step's LoRA
    gradients and three steps' losses stay close to the float32 run's."""
    from styleblend.training import denoising_loss, fit, loss_scale
    from styleblend.sd.models.lora import lora_parameters

    recipe = load_recipe(smoke=True)
    runs = {}
    for dtype in DTYPES:
        sd = loading.load_sd(tiny, dtype=dtype)
        add_lora(sd.unet, recipe.fine.lora_targets, recipe.fine.lora_rank, recipe.fine.lora_alpha)
        params = lora_parameters(sd.unet)
        for i, p in enumerate(params):  # the same start in both runs, every factor non-zero
            p.assign(jt.array(np.random.default_rng(i).standard_normal(p.shape).astype("float32") * 0.1))
        rng = np.random.default_rng(0)
        latents = jt.array(rng.standard_normal((1, 4, 8, 8)).astype("float32"))
        context = jt.array(rng.standard_normal((1, 77, 32)).astype("float32"))
        scale = loss_scale(sd)
        grads = [g.numpy() / scale for g in jt.grad(denoising_loss(sd, latents, context, np.random.default_rng(1))
                                                    * scale, params)]
        losses = fit(params, lambda s: denoising_loss(sd, latents, context, rng), 3, 1e-3, (0.9, 0.999), 0.0,
                     1e-8, dtype, scale=scale)
        runs[dtype] = scale, grads, losses
    (scale32, grads32, losses32), (scale16, grads16, losses16) = runs["float32"], runs["float16"]
    assert (scale32, scale16) == (1.0, 1024.0)
    top = max(np.abs(g).max() for g in grads32)
    assert max(np.abs(a - b).max() for a, b in zip(grads16, grads32)) / top < 5e-2
    np.testing.assert_allclose(losses16, losses32, rtol=5e-3)
