"""Coarse style: SDEdit data (seeded subset / selector / resume), text-encoder LoRA training and loading."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from styleblend import coarse
from styleblend.sd import loading
from styleblend.checkpoints import StyleCheckpoint
from styleblend.coarse import coarse_text_encoder, load_coarse, train_coarse
from styleblend.sdedit import build_sdedit_data, clip_patch_selector
from styleblend.training import denoising_loss, encode_moments, fit, sample_latents
from styleblend.config import load_recipe
from styleblend.data import load_style
from styleblend.errors import DataError, ModelLoadError, StyleBlendError
from styleblend.sd.models.lora import lora_layers, lora_parameters
from styleblend.sd.sampling import encode_prompt

import jittor as jt  # noqa: E402  (after styleblend)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return loading.load_sd(loading.write_tiny_sd(tmp_path_factory.mktemp("coarse") / "tiny-sd", seed=0))


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(smoke=True)


@pytest.fixture
def style(tmp_path):
    images = tmp_path / "set" / "00" / "images"
    images.mkdir(parents=True)
    for name, color in (("red_apple", (200, 30, 30)), ("blue_house", (30, 30, 200))):
        img = Image.new("RGB", (72, 64), (240, 230, 200))
        ImageDraw.Draw(img).ellipse((12, 8, 52, 48), fill=color)
        img.save(images / f"{name}.png")
    (tmp_path / "set" / "00" / "prompt.json").write_text('{"0": "Ring"}')
    return load_style(tmp_path / "set", "00")


def only(style, caption):
    return dataclasses.replace(style, images=[i for i in style.images if i.caption == caption])


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_sdedit_without_selector_keeps_a_seeded_subset_and_resumes(sd, recipe, style, tmp_path):
    one = only(style, "red apple")
    first = build_sdedit_data(sd, one, recipe.sdedit, tmp_path / "a", seed=3)
    twin = build_sdedit_data(sd, one, recipe.sdedit, tmp_path / "b", seed=3)
    assert "random" in first.note
    caption = "red apple"
    assert [p.name for p in first.kept[caption]] == ["red_apple-000.png", "red_apple-001.png"]
    candidates = [np.asarray(c) for c in first.candidates[caption]]
    assert len(candidates) == recipe.sdedit.candidates and first.scores == {}
    for a, b in zip(first.kept[caption], twin.kept[caption]):
        np.testing.assert_array_equal(pixels(a), pixels(b))  # same seed, same images
        assert any(np.array_equal(pixels(a), c) for c in candidates)
    assert not np.array_equal(pixels(first.kept[caption][0]), pixels(first.kept[caption][1]))

    stamp = first.kept[caption][0].stat().st_mtime_ns
    again = build_sdedit_data(sd, one, recipe.sdedit, tmp_path / "a", seed=3)
    assert again.candidates == {} and "reused" in again.note
    assert again.kept == first.kept and first.kept[caption][0].stat().st_mtime_ns == stamp
    forced = build_sdedit_data(sd, one, recipe.sdedit, tmp_path / "a", seed=3, force=True)
    assert len(forced.candidates[caption]) == recipe.sdedit.candidates


def test_sdedit_selector_keeps_the_best_scores(sd, recipe, style, tmp_path):
    one = only(style, "blue house")
    seen = []

    def brightness(reference, candidates):
        seen.append(reference.size)
        return [float(np.asarray(c).mean()) for c in candidates]

    result = build_sdedit_data(sd, one, recipe.sdedit, tmp_path, seed=0, selector=brightness)
    caption = "blue house"
    scores = result.scores[caption]
    best = np.argsort(scores)[::-1][: recipe.sdedit.keep]
    for path, index in zip(result.kept[caption], best):
        np.testing.assert_array_equal(pixels(path), np.asarray(result.candidates[caption][index]))
    assert seen == [(recipe.sdedit.resolution,) * 2] and "random" not in result.note


def test_clip_patch_selector_needs_a_local_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no such CLIP model folder"):
        clip_patch_selector(tmp_path / "missing")


def test_clip_patch_selector_ranks_the_reference_first(tmp_path):
    select = clip_patch_selector(tiny_clip(tmp_path))
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    others = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    scores = select(reference, [others[0], reference, others[1]])
    assert len(scores) == 3 and int(np.argmax(scores)) == 1 and scores[1] == pytest.approx(1.0)


def tiny_clip(folder):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    config = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8)
    transformers.CLIPVisionModel(config).save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                                    ).save_pretrained(folder)
    return folder


def test_recipe_clip_model_reaches_the_sdedit_stage(sd, tmp_path):
    """The recipe's sdedit.clip_model (relative to the recipe file) makes run_sdedit rank candidates by CLIP."""
    from styleblend.reproduce import run_sdedit
    from styleblend.run_context import SetPaths

    tiny_clip(tmp_path / "clip")
    (tmp_path / "recipe.yaml").write_text("sdedit: {clip_model: clip, candidates: 3, keep: 2}\n")
    recipe = load_recipe(tmp_path / "recipe.yaml", smoke=True)
    assert recipe.sdedit.clip_model == str(tmp_path / "clip")
    demo = Path(__file__).resolve().parents[1] / "data" / "demo"
    paths = SetPaths("demo", demo, tmp_path / "result", tmp_path / "checkpoints")
    result = run_sdedit(sd, load_style(demo, "dots"), recipe, paths)
    assert result.scores and all(len(s) == 3 for s in result.scores.values())
    assert "ranks highest" in result.note
    again = run_sdedit(sd, load_style(demo, "dots"), recipe, paths)
    assert "ranked by the CLIP model" in again.note and again.candidates == {}


def test_subjects_cut_at_a_dash_share_their_sdedit_images(sd, recipe, tmp_path, monkeypatch):
    """The original's coarse stage reads "cat-2.png" and "cat-3.png" as one subject "cat"."""
    from styleblend.data import coarse_caption

    assert (coarse_caption("cat-2"), coarse_caption("woman walking a dog"), coarse_caption("-x")) == (
        "cat", "woman walking a dog", "-x")
    folder = tmp_path / "s" / "images"
    folder.mkdir(parents=True)
    for name, colour in (("cat-2.png", (200, 0, 0)), ("cat-3.png", (0, 0, 200))):
        Image.new("RGB", (64, 64), colour).save(folder / name)
    (tmp_path / "s" / "prompt.json").write_text('{"0": "Ring"}')
    style_data = load_style(tmp_path, "s")
    kept = {item.caption: [item.path] for item in style_data.images}
    seen = []
    monkeypatch.setattr(coarse, "encode_prompt", lambda sd_, prompts, te: (seen.extend(prompts),
                                                                            encode_prompt(sd_, prompts, te))[1])
    train_coarse(sd, style_data, kept, recipe.coarse, StyleCheckpoint(tmp_path / "ck", "x", "s"), seed=0)
    assert seen and set(seen) == {"A cat in the style of <C>."}


def test_fit_follows_the_learning_rate_schedule():
    p = jt.array(np.array([1.0, -2.0], np.float32))
    losses = fit([p], lambda step: (p * p).sum(), 3, 0.1, (0.9, 0.999), 0.0, 1e-8, desc="test",
                 lr_factor=lambda step: 1.0 if step == 0 else 0.0)
    np.testing.assert_allclose(p.numpy(), [0.9, -1.9], atol=1e-5)  # one Adam step of size lr, then lr = 0
    assert losses[0] == pytest.approx(5.0) and len(losses) == 3


def test_coarse_lora_lowers_the_loss_on_a_fixed_batch(sd, recipe, style):
    cfg = recipe.coarse
    te = coarse_text_encoder(sd, cfg, np.random.default_rng(0))
    latents = sample_latents(sd, encode_moments(sd, [style.images[0].image], cfg.resolution), np.random.default_rng(1))
    prompt = "A red apple in the style of <C>."

    def loss_at(step):  # the same timestep and noise every step
        return denoising_loss(sd, latents, encode_prompt(sd, [prompt], te), np.random.default_rng(2))

    losses = fit(lora_parameters(te), loss_at, 6, 1e-2, cfg.betas, 0.0, cfg.eps, desc="test")
    assert losses[-1] < 0.9 * losses[0]


def test_train_coarse_trains_only_the_lora_and_reloads_exactly(sd, recipe, style, tmp_path):
    cfg = recipe.coarse
    sdedit = {}
    for item in style.images:  # stand-ins for SDEdit images: the references themselves
        path = tmp_path / "sdedit" / f"{item.path.stem}-000.png"
        path.parent.mkdir(exist_ok=True)
        item.image.save(path)
        sdedit[item.caption] = [path]
    base = {k: v.numpy() for k, v in sd.text_encoder.state_dict().items()}
    ckpt = StyleCheckpoint(tmp_path / "ckpt", "B", "00")

    result = train_coarse(sd, style, sdedit, cfg, ckpt, seed=0)
    assert len(result.losses) == cfg.steps and all(np.isfinite(result.losses))
    assert result.files == [ckpt.coarse_embeds, ckpt.text_encoder_lora, ckpt.config]
    for name, value in sd.text_encoder.state_dict().items():  # the base encoder is untouched
        np.testing.assert_array_equal(value.numpy(), base[name])
    trained = result.text_encoder.state_dict()
    table = trained["text_model.embeddings.token_embedding.weight"].numpy()
    c_id = sd.tokenizer.convert_tokens_to_ids(cfg.token)
    amp_id = sd.tokenizer.encode(cfg.init_token, add_special_tokens=False)[0]
    np.testing.assert_array_equal(table[c_id], table[amp_id])  # <C> keeps its initial row (as the original)
    for name, value in trained.items():
        if "lora" not in name and name in base and name != "text_model.embeddings.token_embedding.weight":
            np.testing.assert_array_equal(value.numpy(), base[name])
    assert any(np.abs(v.numpy()).max() > 0 for k, v in trained.items() if "lora_up" in k)
    assert len(lora_layers(result.text_encoder)) == 4 * sd.text_encoder.config["num_hidden_layers"]

    ids = jt.array(np.array([sd.tokenizer("A red apple in the style of <C>.", padding="max_length",
                                          max_length=77).input_ids], np.int32))
    np.testing.assert_array_equal(load_coarse(sd, ckpt)(ids).numpy(), result.text_encoder(ids).numpy())

    with pytest.raises(StyleBlendError, match="coarse_embeds.safetensors"):
        train_coarse(sd, style, sdedit, cfg, ckpt, seed=0)
    again = train_coarse(sd, style, sdedit, cfg, ckpt, seed=0, force=True)
    assert again.losses == result.losses  # seeded: the same run
    with pytest.raises(DataError, match="red apple"):
        train_coarse(sd, style, {"blue house": sdedit["blue house"]}, cfg, ckpt, seed=0, force=True)
