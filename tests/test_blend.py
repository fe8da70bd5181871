"""The two-branch sampler on the tiny model: exchange schedule, what attention sees, LoRA scales, generation."""
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from styleblend.blend import InjectionPlan, blend_sample, generate_style
from styleblend.checkpoints import StyleCheckpoint
from styleblend.coarse import load_coarse
from styleblend.config import load_recipe
from styleblend.data import StyleData
from styleblend.errors import ConfigError
from styleblend.sd.loading import load_sd, write_tiny_sd
from styleblend.sd.models.lora import add_lora, lora_layers
from styleblend.sd.tokens import add_token

import jittor as jt

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
STEPS = 4
# c2f: layers 1, 6 for int(0.5 * 4) = 2 steps; f2c: layer 14 for int(0.25 * 4) = 1 step, layer 6 (in both
# lists) on the c2f schedule, as the original's feature blender.
Q_AT = {(1, 0), (1, 1), (6, 0), (6, 1)}
KV_AT = {(6, 0), (6, 1), (14, 0)}


def _random_lora(model, targets, rng):
    add_lora(model, targets, rank=2, alpha=2)
    for layer in lora_layers(model).values():
        up = layer.lora_up.weight
        up.assign(jt.array(rng.standard_normal(tuple(up.shape)).astype(np.float32) * 0.5))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny SD with <F> and a random UNet LoRA, and a coarse text encoder with <C> and a random LoRA."""
    sd = load_sd(write_tiny_sd(tmp_path_factory.mktemp("blend") / "tiny-sd", seed=0))
    rng = np.random.default_rng(0)
    add_token(sd.tokenizer, sd.text_encoder, "<F>", "artistic")
    coarse = sd.text_encoder.clone()
    add_token(sd.tokenizer, coarse, "<C>", "&")
    _random_lora(coarse, TE_TARGETS, rng)
    _random_lora(sd.unet, UNET_TARGETS, rng)
    return sd, coarse


@pytest.fixture(scope="module")
def cfg():
    blend = load_recipe(smoke=True).blend
    params = replace(blend.params, c2f_layers=[1, 6], f2c_layers=[6, 14], c2f_ratio=0.5, f2c_ratio=0.25,
                     lora_scale=0.3)
    return replace(blend, steps=STEPS, params=params)


def run(models, cfg, mode="full", seed=1, probe=None, **changes):
    """``blend_sample`` with ``cfg.params`` changed by ``changes``; checks that nothing stays installed."""
    sd, coarse = models
    out = blend_sample(sd, coarse, "Ice cream", replace(cfg.params, **changes), cfg, seed, mode=mode, probe=probe)
    assert_clean(sd)
    return out


def assert_clean(sd):
    assert all(block.attn1.hook is None for block in sd.unet.transformer_blocks())
    assert all(is_one(layer.multiplier) for layer in lora_layers(sd.unet).values())


def is_one(multiplier):
    return not isinstance(multiplier, jt.Var) and multiplier == 1.0


def pixels(image):
    return np.asarray(image, dtype=np.int16)


class Recorder:
    """A probe keeping q / k / v (numpy) of every layer and step, and the LoRA multipliers seen in layer 0."""

    def __init__(self, sd):
        self.blocks, self.seen, self.multipliers = sd.unet.transformer_blocks(), {}, None

    def __call__(self, layer, step, q, k, v):
        self.seen[layer, step] = tuple(x.numpy() for x in (q, k, v))
        if self.multipliers is None:
            attn = self.blocks[layer].attn1
            self.multipliers = {name: getattr(attn, name).multiplier for name in ("to_q", "to_k", "to_v")}
            self.multipliers["to_out.0"] = attn.to_out[0].multiplier


@pytest.fixture(scope="module")
def full(models, cfg):
    recorder = Recorder(models[0])
    return run(models, cfg, probe=recorder), recorder


@pytest.fixture(scope="module")
def plain(models, cfg):
    return run(models, cfg, mode="none")


def test_plan_schedule_and_modes(cfg):
    plan = InjectionPlan.for_mode(cfg.params, STEPS)
    grid = [(layer, step) for layer in range(16) for step in range(STEPS)]
    assert {at for at in grid if plan.inject_q(*at)} == Q_AT
    assert {at for at in grid if plan.inject_kv(*at)} == KV_AT
    q_only, kv_only = (InjectionPlan.for_mode(cfg.params, STEPS, m) for m in ("q_only", "kv_only"))
    assert [q_only.inject_q(1, 0), q_only.inject_kv(6, 0), kv_only.inject_q(1, 0), kv_only.inject_kv(6, 1)] == \
        [True, False, False, True]
    for mode in ("none", "csb", "fsb"):
        plan = InjectionPlan.for_mode(cfg.params, STEPS, mode)
        assert not any(plan.inject_q(*at) or plan.inject_kv(*at) for at in grid)
    with pytest.raises(ConfigError, match="'mixed'"):
        InjectionPlan.for_mode(cfg.params, STEPS, "mixed")


def test_exchange_changes_the_result_and_empty_lists_change_nothing(models, cfg, full, plain):
    out, _ = full
    assert out.fsb.size == out.csb.size == (cfg.output_size, cfg.output_size)
    assert np.abs(pixels(out.fsb) - pixels(plain.fsb)).max() > 0
    empty = run(models, cfg, c2f_layers=[], f2c_layers=[])
    np.testing.assert_array_equal(empty.latents.numpy(), plain.latents.numpy())
    np.testing.assert_array_equal(pixels(empty.fsb), pixels(plain.fsb))


def test_fsb_attends_with_csb_queries_only_where_planned(full):
    seen = full[1].seen
    assert len(seen) == 16 * STEPS
    for (layer, step), (q, _, _) in seen.items():
        if (layer, step) in Q_AT:
            for row in (1, 3):
                np.testing.assert_array_equal(q[row], q[2])
        else:
            assert np.abs(q[3] - q[2]).max() > 1e-4, (layer, step)


def test_csb_attends_with_fsb_keys_values_only_where_planned(full):
    for (layer, step), (_, k, v) in full[1].seen.items():
        if (layer, step) in KV_AT:
            for row in (0, 2):
                np.testing.assert_array_equal(k[row], k[3])
                np.testing.assert_array_equal(v[row], v[3])
        else:
            assert np.abs(k[2] - k[3]).max() > 1e-4, (layer, step)
            assert np.abs(v[0] - v[3]).max() > 1e-4, (layer, step)


def test_csb_lora_scale_on_qkv_only(full):
    multipliers = full[1].multipliers
    for name in ("to_q", "to_k", "to_v"):
        np.testing.assert_allclose(multipliers[name].numpy(), [0.3, 1.0, 0.3, 1.0])
    assert is_one(multipliers["to_out.0"])


def test_lora_scale_changes_only_the_csb(models, cfg, plain):
    other = run(models, cfg, mode="none", lora_scale=0.9)
    np.testing.assert_array_equal(other.latents.numpy()[1], plain.latents.numpy()[1])
    assert np.abs(other.latents.numpy()[0] - plain.latents.numpy()[0]).max() > 0.1


def test_seed_decides_the_image(models, cfg, plain):
    again = run(models, cfg, mode="none")
    np.testing.assert_array_equal(pixels(again.fsb), pixels(plain.fsb))
    other = run(models, cfg, mode="none", seed=2)
    assert np.abs(pixels(other.fsb) - pixels(plain.fsb)).max() > 0


def test_one_branch_modes_match_the_two_branch_run(models, cfg):
    one_step = replace(cfg, steps=1)  # float drift across batch sizes grows with the steps on random weights
    both, csb, fsb = (run(models, one_step, mode=mode) for mode in ("none", "csb", "fsb"))
    assert csb.fsb is None and fsb.csb is None and csb.image is csb.csb and fsb.image is fsb.fsb
    # a wrong scale, prompt or negative moves these latents by about 0.1 or more
    np.testing.assert_allclose(csb.latents.numpy()[0], both.latents.numpy()[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(fsb.latents.numpy()[0], both.latents.numpy()[1], rtol=0, atol=1e-4)


def test_hooks_and_scales_removed_after_an_error(models, cfg):
    def fail(*_):
        raise RuntimeError("probe failed")

    with pytest.raises(RuntimeError, match="probe failed"):
        run(models, cfg, probe=fail)
    assert_clean(models[0])


def test_generate_style_writes_resumes_and_forces(models, cfg, tmp_path):
    sd, coarse = models
    ckpt = StyleCheckpoint(tmp_path / "ckpt", "B", "00")
    for kind, encoder, token, init in (("coarse_embeds", coarse, "<C>", "&"),
                                       ("fine_embeds", sd.text_encoder, "<F>", "artistic")):
        row = encoder.token_embedding_weight.numpy()[sd.tokenizer.convert_tokens_to_ids(token)]
        ckpt.save_embedding(kind, token, init, row)
    ckpt.save_lora("text_encoder_lora", coarse, TE_TARGETS)
    ckpt.save_lora("unet_lora", sd.unet, UNET_TARGETS)
    cfg = replace(cfg, steps=2, params=replace(cfg.params, seeds={"Ring": 7}, default_seed=3))
    style = StyleData("00", tmp_path, [], {"0": "Ring", "1": "Ice cream"})
    results = tmp_path / "results"
    kept = results / "B" / "00" / "Ice cream.png"
    kept.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(kept)

    paths = generate_style(sd, style, ckpt, cfg.params, cfg, results, "B")
    assert paths == [results / "B" / "00" / "Ring.png", kept]
    assert Image.open(kept).size == (8, 8)  # existing image skipped
    ring = Image.open(paths[0])
    assert ring.size == (512, 512) and ring.mode == "RGB"
    expected = blend_sample(sd, load_coarse(sd, ckpt), "Ring", cfg.params, cfg, seed=7).fsb
    np.testing.assert_array_equal(pixels(ring), pixels(expected))
    assert_clean(sd)

    generate_style(sd, style, ckpt, cfg.params, cfg, results, "B", force=True)
    assert Image.open(kept).size == (512, 512)
    # nothing left to do: the (here missing) checkpoint is not even read
    generate_style(sd, style, StyleCheckpoint(tmp_path / "none", "B", "00"), cfg.params, cfg, results, "B")
