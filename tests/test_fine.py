"""Fine style: textual inversion of <F> (one row learns), UNet LoRA (only LoRA learns), save / load."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from styleblend.sd import loading
from styleblend.checkpoints import StyleCheckpoint
from styleblend.training import denoising_loss, encode_moments, fit, sample_latents
from styleblend.config import load_recipe
from styleblend.data import load_style
from styleblend.errors import StyleBlendError
from styleblend.fine import load_fine, prepare_unet_lora, train_fine
from styleblend.sd.models.lora import lora_layers, lora_parameters, lora_state_dict
from styleblend.sd.sampling import encode_prompt
from styleblend.sd.tokens import add_token

import jittor as jt  # noqa: E402  (after styleblend)

PROMPT = "A red apple in the style of <F>."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return loading.write_tiny_sd(tmp_path_factory.mktemp("fine") / "tiny-sd", seed=0)


@pytest.fixture
def sd(tiny):  # a fresh model per test: training adds LoRA layers to its UNet
    return loading.load_sd(tiny)


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(smoke=True)


@pytest.fixture(scope="module")
def style(tmp_path_factory):
    root = tmp_path_factory.mktemp("style")
    (root / "00" / "images").mkdir(parents=True)
    for name, color in (("red_apple", (200, 30, 30)), ("blue_house", (30, 30, 200))):
        img = Image.new("RGB", (64, 64), (240, 230, 200))
        ImageDraw.Draw(img).rectangle((8, 16, 40, 56), fill=color)
        img.save(root / "00" / "images" / f"{name}.png")
    (root / "00" / "prompt.json").write_text('{"0": "Ring"}')
    return load_style(root, "00")


def fixed_batch(sd, style, recipe):
    return sample_latents(sd, encode_moments(sd, [style.images[1].image], recipe.fine.resolution),
                          np.random.default_rng(1))


def unet_output(sd, context):
    x = jt.array(np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32))
    return sd.unet(x, 500, context).numpy()


def base_weights(model):
    return {k: v.numpy() for k, v in model.state_dict().items() if "lora" not in k}


def test_textual_inversion_changes_exactly_one_row_and_lowers_the_loss(sd, style, recipe):
    te = sd.text_encoder.clone()
    f_id = add_token(sd.tokenizer, te, "<F>", "artistic")
    before = te.token_embedding_weight.numpy()
    latents = fixed_batch(sd, style, recipe)

    def loss_at(step):
        return denoising_loss(sd, latents, encode_prompt(sd, [PROMPT], te), np.random.default_rng(2))

    with te.trainable_row(f_id) as row:
        losses = fit([row], loss_at, 6, 0.3, recipe.fine.ti_betas, recipe.fine.weight_decay, recipe.fine.eps,
                     desc="test")
    assert np.all(np.diff(losses) < 0) and losses[-1] < 0.95 * losses[0]
    after = te.token_embedding_weight.numpy()
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert changed.tolist() == [f_id]
    np.testing.assert_array_equal(after[f_id], row.numpy())


def test_training_one_row_is_the_originals_whole_table_update(sd, style, recipe):
    """The original: AdamW on the whole table (weight decay on), every other row put back after each step."""
    latents = fixed_batch(sd, style, recipe)
    cfg = recipe.fine
    encoders = []
    for _ in range(2):
        te = sd.text_encoder.clone()
        encoders.append((te, add_token(sd.tokenizer, te, "<F>", "artistic")))

    def loss_of(te):
        return lambda step: denoising_loss(sd, latents, encode_prompt(sd, [PROMPT], te), np.random.default_rng(step))

    (table_te, f_id), (row_te, _) = encoders
    table = table_te.token_embedding_weight
    frozen = table.numpy()
    optimizer = jt.optim.AdamW([table], lr=0.05, eps=cfg.eps, betas=tuple(cfg.ti_betas), weight_decay=0.1)
    for step in range(3):
        optimizer.step(loss_of(table_te)(step))
        frozen[f_id] = table.numpy()[f_id]
        table.assign(jt.array(frozen))
    with row_te.trainable_row(f_id) as row:
        fit([row], loss_of(row_te), 3, 0.05, cfg.ti_betas, 0.1, cfg.eps, desc="test")
    np.testing.assert_allclose(row_te.token_embedding_weight.numpy(), table.numpy(), rtol=0, atol=1e-6)
    assert np.abs(table.numpy()[f_id] - sd.text_encoder.token_embedding_weight.numpy()[
        sd.tokenizer.convert_tokens_to_ids("artistic")]).max() > 1e-3  # the row did move


def test_unet_lora_changes_only_lora_weights_and_lowers_the_loss(sd, style, recipe):
    base = base_weights(sd.unet)
    prepare_unet_lora(sd.unet, recipe.fine, np.random.default_rng(0))
    context = encode_prompt(sd, ["A red apple in the style of artistic."])
    latents = fixed_batch(sd, style, recipe)
    losses = fit(lora_parameters(sd.unet), lambda step: denoising_loss(sd, latents, context, np.random.default_rng(2)),
                 6, 1e-2, recipe.fine.lora_betas, 0.0, recipe.fine.eps, desc="test")
    assert losses[-1] < 0.9 * losses[0]
    for name, value in base_weights(sd.unet).items():
        np.testing.assert_array_equal(value, base[name])


def test_train_fine_saves_and_leaves_the_model_as_it_was(sd, style, recipe, tmp_path):
    cfg = recipe.fine
    te_before, unet_before = base_weights(sd.text_encoder), base_weights(sd.unet)
    context = encode_prompt(sd, ["A red apple in the style of artistic."])
    out_before = unet_output(sd, context)
    ckpt = StyleCheckpoint(tmp_path, "B", "00")

    result = train_fine(sd, style, cfg, ckpt, seed=0)
    assert (len(result.ti_losses), len(result.lora_losses)) == (cfg.ti_steps, cfg.lora_steps)
    assert result.files == [ckpt.fine_embeds, ckpt.unet_lora, ckpt.config]
    for before, model in ((te_before, sd.text_encoder), (unet_before, sd.unet)):
        for name, value in base_weights(model).items():
            np.testing.assert_array_equal(value, before[name])
    np.testing.assert_array_equal(unet_output(sd, context), out_before)  # LoRA layers are no-ops again
    assert len(lora_layers(sd.unet)) == 4 * 2 * len(sd.unet.transformer_blocks())

    with pytest.raises(StyleBlendError, match="fine_embeds.safetensors"):
        train_fine(sd, style, cfg, ckpt, seed=0)

    f_id = load_fine(sd, ckpt)
    ids = jt.array(np.array([sd.tokenizer(PROMPT, padding="max_length", max_length=77).input_ids], np.int32))
    np.testing.assert_array_equal(sd.text_encoder(ids).numpy(), result.text_encoder(ids).numpy())
    assert f_id == sd.tokenizer.convert_tokens_to_ids("<F>")
    saved = ckpt.load_tensors("unet_lora")[0]
    assert any(np.abs(v).max() > 0 for k, v in saved.items() if "lora_up" in k)
    for name, var in lora_state_dict(sd.unet).items():
        np.testing.assert_array_equal(var.numpy(), saved[name])
    styled = unet_output(sd, context)
    assert not np.array_equal(styled, out_before)

    other = StyleCheckpoint(tmp_path, "B", "01")
    train_fine(sd, style, cfg, other, seed=1)
    load_fine(sd, other)
    assert not np.array_equal(unet_output(sd, context), styled)
    load_fine(sd, ckpt)  # back to the first style: same layers, reloaded weights
    np.testing.assert_array_equal(unet_output(sd, context), styled)
    np.testing.assert_array_equal(sd.text_encoder(ids).numpy(), result.text_encoder(ids).numpy())
