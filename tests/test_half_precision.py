"""float16 against float32 on the tiny model (CPU; the GPU side is in bench/): the same weights loaded in each
dtype give close UNet predictions and close StyleBlend samples. Measured here: UNet 1.1e-2 relative error,
StyleBlend latents 2.0e-2 and images 1.5/255 mean absolute difference (random tiny weights, 4 smoke steps); the
bounds below leave about 2× room."""
import numpy as np
import pytest

from styleblend import loading
from styleblend.blend import blend_sample
from styleblend.config import load_recipe
from styleblend.models.lora import add_lora
from styleblend.tokens import add_token

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
