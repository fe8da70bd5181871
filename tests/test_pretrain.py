"""The toy model's pretraining command: it runs, writes a folder load_sd reads, and keeps what exists."""
import json

import numpy as np
import pytest

from styleblend.errors import ConfigError, ModelLoadError
from styleblend.pretrain import PretrainConfig, pretrain_toy, vae_loss
from styleblend.runners.cli import main
from styleblend.sd.loading import load_sd


def test_smoke_pretraining_writes_a_loadable_model_and_its_curves(tmp_path):
    out = tmp_path / "toy"
    assert main(["pretrain-toy", str(out), "--smoke"]) == 0
    curves = json.loads((out / "training_curves.json").read_text())
    cfg = PretrainConfig.load(smoke=True)
    assert len(curves["vae"]) == cfg.vae_steps and len(curves["denoiser"]) == cfg.denoiser_steps
    assert all(np.isfinite(curves["vae"] + curves["denoiser"]))
    sd = load_sd(out)
    assert sd.unet.config["block_out_channels"] == [32, 48, 64, 64] and len(sd.unet.transformer_blocks()) == 16
    assert sd.vae.config["scaling_factor"] != 0.18215, "the toy VAE's own latent scale"
    with pytest.raises(ModelLoadError, match="already exists"):
        pretrain_toy(out, smoke=True)


def test_an_interrupted_pretraining_continues_to_the_model_an_uninterrupted_one_makes(tmp_path, monkeypatch):
    from styleblend import pretrain

    monkeypatch.setattr(pretrain, "SAVE_EVERY", 2)
    config = tmp_path / "c.yaml"
    config.write_text("vae_steps: 3\ndenoiser_steps: 5\n")
    whole = pretrain_toy(tmp_path / "whole", config, smoke=True, echo=lambda _: None)

    real_loss, calls = pretrain.denoising_loss, []

    def interrupted(*args, **kwargs):  # Ctrl-C at the denoiser's 4th step, after the save at step 2
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(pretrain, "denoising_loss", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        pretrain_toy(out, config, smoke=True, echo=lambda _: None)
    partial = tmp_path / "resumed.partial.safetensors"
    assert partial.is_file() and not out.exists()
    monkeypatch.setattr(pretrain, "denoising_loss", real_loss)
    lines = []
    pretrain_toy(out, config, smoke=True, echo=lines.append)
    assert lines[0].startswith(f"continuing {partial}: denoiser stage, step 2")
    assert not partial.exists(), "the progress file goes once the model is written"
    assert (out / "training_curves.json").read_text() == (whole / "training_curves.json").read_text()
    resumed, fresh = load_sd(out), load_sd(whole)
    for name in ("vae", "unet", "text_encoder"):
        theirs = getattr(fresh, name).state_dict()
        for key, value in getattr(resumed, name).state_dict().items():
            np.testing.assert_array_equal(value.numpy(), theirs[key].numpy(), err_msg=f"{name}.{key}")


def test_saved_progress_of_another_config_is_refused_and_kept(tmp_path, monkeypatch):
    from styleblend import pretrain

    monkeypatch.setattr(pretrain, "SAVE_EVERY", 2)
    real_loss = pretrain.denoising_loss

    def interrupted(*args, **kwargs):  # Ctrl-C at the denoiser's first step, after the VAE stage's save
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "denoising_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain_toy(tmp_path / "toy", smoke=True, echo=lambda _: None)
    partial = tmp_path / "toy.partial.safetensors"
    before = partial.read_bytes()
    monkeypatch.setattr(pretrain, "denoising_loss", real_loss)
    other = tmp_path / "other.yaml"
    other.write_text("denoiser_lr: 1.0e-3\n")
    with pytest.raises(ConfigError, match="toy.partial.safetensors.*another config"):
        pretrain_toy(tmp_path / "toy", other, smoke=True, echo=lambda _: None)
    assert partial.read_bytes() == before and not (tmp_path / "toy").exists()


def test_vae_loss_is_reconstruction_plus_kl(tmp_path):
    import jittor as jt
    from styleblend.pretrain import TOY_CONFIGS
    from styleblend.sd.loading import write_random_sd

    sd = load_sd(write_random_sd(tmp_path / "m", configs=TOY_CONFIGS, seed=0, dtype="float32"))
    images = jt.array(np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32))
    eps = jt.zeros((2, 4, 4, 4))
    plain = float(vae_loss(sd.vae, images, eps, 0.0).item())
    posterior = sd.vae.encode(images)
    expected = float(((sd.vae.decode(posterior.mean) - images) ** 2).mean().item())
    assert plain == pytest.approx(expected, rel=1e-5)
    assert float(vae_loss(sd.vae, images, eps, 1.0).item()) > plain


def test_encoding_in_batches_gives_each_images_moments_as_one_at_a_time(tmp_path):
    from styleblend.pretrain import TOY_CONFIGS
    from styleblend.sd.loading import write_random_sd
    from styleblend.toyworld import pretraining_pairs
    from styleblend.training import encode_moments

    sd = load_sd(write_random_sd(tmp_path / "m", configs=TOY_CONFIGS, seed=0, dtype="float32"))
    images = [image for image, _ in pretraining_pairs(5, 0, 32)]
    one, batched = encode_moments(sd, images, 32), encode_moments(sd, images, 32, batch=3)  # chunks of 3 and 2
    assert len(batched) == 5 and all(m.shape == (1, 4, 8, 8) for pair in batched for m in pair)
    for (mean, std), (b_mean, b_std) in zip(one, batched):
        np.testing.assert_allclose(b_mean, mean, atol=1e-5)
        np.testing.assert_allclose(b_std, std, atol=1e-5)


def test_bad_pretraining_config_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vae_stpes: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*vae_stpes"):
        PretrainConfig.load(bad)
    bad.write_text("styles: [flat, dots]\n")
    with pytest.raises(ConfigError, match="bad.yaml: styles .*held-out"):
        PretrainConfig.load(bad)
    bad.write_text("spread: -0.1\n")
    with pytest.raises(ConfigError, match="bad.yaml: spread must be between 0 and 0.5.*-0.1"):
        PretrainConfig.load(bad)


def test_the_toy_models_recipe_follows_its_size(tmp_path, monkeypatch):
    from styleblend.config import load_recipe
    from styleblend.sd import loading

    recipe = load_recipe(model="toy")
    assert (recipe.sdedit.resolution, recipe.coarse.resolution, recipe.fine.resolution, recipe.blend.resolution) == \
        (64, 64, 64, 64)
    assert recipe.blend.output_size == 512 and recipe.sdedit.prompt_template == "A {caption}, flat."
    assert load_recipe(model="toy", smoke=True).fine.ti_steps == 3, "smoke sizes still win"
    assert load_recipe().blend.resolution == 768
    monkeypatch.setattr(loading, "TOY_MODEL", tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="toy model is not in this checkout.*pretrain-toy"):
        loading.resolve_model("toy")


def test_the_committed_toy_model_is_what_the_config_trains():
    """One place for the toy model's recipe: the committed weights' curves record the config they were trained with."""
    from dataclasses import asdict
    from styleblend.sd.loading import resolve_model

    curves = json.loads((resolve_model("toy") / "training_curves.json").read_text())
    assert curves["config"] == json.loads(json.dumps(asdict(PretrainConfig.load())))
    assert len(curves["denoiser"]) == curves["config"]["denoiser_steps"]
    assert np.mean(curves["denoiser"][-100:]) < 0.5 * np.mean(curves["denoiser"][:100])


def test_the_toy_model_paints_the_prompts_colours():
    """The pretrained toy model follows its prompt: the named background fills the border, the object's colour the
    centre (random weights paint neither)."""
    from styleblend.sd.loading import resolve_model
    from styleblend.sd.sampling import text_to_image

    sd = load_sd(resolve_model("toy"))
    prompts = ["A red fish on a blue background.", "A green star on a white background.",
               "A yellow house on a black background."]
    images = [np.asarray(im, dtype=np.float32) / 255 for im in
              text_to_image(sd, prompts, steps=20, guidance=4.0, height=64, width=64, seed=0)]
    border = [np.concatenate([im[:4].reshape(-1, 3), im[-4:].reshape(-1, 3)]).mean(0) for im in images]
    # the object: the pixels far from the background's colour (objects sit anywhere, at any size)
    thing = [im[np.abs(im - b).sum(-1) > 0.6].mean(0) for im, b in zip(images, border)]
    assert border[0][2] > border[0][0] + 0.3 and thing[0][0] > thing[0][2] + 0.2   # blue around, a red thing
    assert border[1].min() > 0.75 and thing[1][1] > thing[1][0] + 0.1              # white around, a green thing
    assert border[2].max() < 0.25 and thing[2][:2].min() > thing[2][2] + 0.2        # black around, a yellow thing


def test_the_toy_models_curves_are_shown_and_other_models_have_none(tmp_path):
    """Notebook 00 plots the pretraining curves of a model that has them (the toy model) and skips the others."""
    from styleblend import figures, lessons
    from styleblend.sd.loading import resolve_model, write_tiny_sd

    curves = lessons.pretraining_curves(resolve_model("toy"))
    recorded = json.loads((resolve_model("toy") / "training_curves.json").read_text())
    assert curves == {"VAE": recorded["vae"], "text encoder + UNet": recorded["denoiser"]}
    fig = figures.loss_curves(curves, smooth=50, log_scale=True)
    assert [(ax.get_title(), ax.get_yscale()) for ax in fig.axes] == [("VAE", "log"), ("text encoder + UNet", "log")]
    assert lessons.pretraining_curves(write_tiny_sd(tmp_path / "tiny-sd", seed=0)) is None
