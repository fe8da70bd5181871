"""Recipe loading (defaults, smoke preset, user overrides, errors), per-style blend parameters, atomic I/O."""
import json
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styleblend.config import (CONFIG_DIR, BlendConfig, BlendParams, CoarseConfig, FineConfig, Recipe,
                               SDEditConfig, format_prompt, load_recipe, save_recipe, style_blend_params)
from styleblend.errors import ConfigError, ModelLoadError, StyleBlendError
from styleblend.io import (load_safetensors, load_safetensors_metadata, load_yaml, save_image, save_safetensors,
                           save_yaml, write_atomic)

ROOT = Path(__file__).resolve().parents[1]
SHARED_PARAMS = ROOT.parent / "shared" / "data" / "B_blend_parameters.json"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_original_recipe():
    r = load_recipe()
    assert r.seed == 2024
    assert (r.sdedit.resolution, r.sdedit.steps, r.sdedit.guidance) == (768, 20, 7.5)
    assert r.sdedit.prompt_template == "A {caption}, realistic."
    assert r.sdedit.negative_prompt == "ugly, low quality, blur, distorted"
    assert (r.sdedit.strengths, r.sdedit.candidates, r.sdedit.keep) == ([0.85, 0.8, 0.75], 15, 10)
    c = r.coarse
    assert (c.token, c.init_token, c.lora_rank, c.lora_alpha) == ("<C>", "&", 16, 16)
    assert c.lora_targets == ["q_proj", "k_proj", "v_proj", "out_proj"]
    assert (c.steps, c.batch_size, c.resolution, c.lr, c.betas, c.weight_decay) == (300, 1, 768, 1e-4, (0.9, 0.999),
                                                                                     1e-2)
    assert c.prompt_template == "A {caption} in the style of {token}."
    f = r.fine
    assert (f.token, f.init_token, f.resolution, f.flip) == ("<F>", "artistic", 768, True)
    assert (f.ti_steps, f.ti_lr, f.ti_betas, f.ti_decay, f.ti_decay_every) == (500, 1e-2, (0.85, 0.999), 0.7, 30)
    assert (f.lora_rank, f.lora_alpha, f.lora_steps, f.lora_lr, f.lora_halve_every) == (16, 16, 500, 5e-4, 200)
    assert f.lora_targets == ["to_q", "to_k", "to_v", "to_out.0"]
    assert (f.lora_betas, f.weight_decay, f.eps) == ((0.9, 0.999), 1e-2, 1e-8)
    b = r.blend
    assert (b.steps, b.guidance, b.resolution, b.output_size) == (30, 7.5, 768, 512)
    assert (b.fsb_negative, b.csb_negative, b.prompt_template) == ("blur", "", "A {prompt} in the style of {token}.")
    p = b.params
    assert p.c2f_layers == [4, 5, 6, 7, 8, 9] and p.f2c_layers == [0, 1, 2, 3, 10, 11, 12, 13, 14, 15]
    assert (p.lora_scale, p.c2f_ratio, p.f2c_ratio, p.seeds, p.default_seed) == (0.3, 0.8, 0.6, {}, 2024)
    assert isinstance(c.lr, float) and isinstance(c.steps, int)


def test_smoke_preset_only_shrinks_sizes_and_steps():
    full, smoke = load_recipe(), load_recipe(smoke=True)
    assert {smoke.sdedit.resolution, smoke.coarse.resolution, smoke.fine.resolution, smoke.blend.resolution} == {64}
    assert (smoke.sdedit.steps, smoke.sdedit.candidates, smoke.sdedit.keep) == (2, 3, 2)
    assert (smoke.coarse.steps, smoke.fine.ti_steps, smoke.fine.lora_steps, smoke.blend.steps) == (3, 3, 3, 4)
    assert smoke.blend.output_size == 512
    assert smoke.blend.params == full.blend.params and smoke.coarse.lr == full.coarse.lr


def test_user_file_overrides_part_of_the_recipe(tmp_path):
    user = write(tmp_path / "mine.yaml", "coarse:\n  steps: 7\n  lr: 2e-4\nblend:\n  params:\n    lora_scale: 0.5\n")
    r = load_recipe(user, smoke=True)
    assert (r.coarse.steps, r.coarse.lr, r.blend.params.lora_scale) == (7, 2e-4, 0.5)
    assert r.coarse.resolution == 64 and r.blend.params.c2f_ratio == 0.8  # smoke and defaults underneath


@pytest.mark.parametrize("text, words", [
    ("coarse:\n  stepz: 3\n", ["mine.yaml", "coarse.stepz"]),
    ("bogus: 1\n", ["mine.yaml", "bogus"]),
    ("blend:\n  params:\n    layers: [1]\n", ["mine.yaml", "blend.params.layers"]),
    ("coarse:\n  steps: 3.5\n", ["mine.yaml", "coarse.steps", "int"]),
    ("coarse:\n  steps: true\n", ["mine.yaml", "coarse.steps"]),
    ("coarse:\n  lr: fast\n", ["mine.yaml", "coarse.lr", "float"]),
    ("coarse:\n  betas: [0.9]\n", ["mine.yaml", "coarse.betas"]),
    ("fine:\n  lora_targets: to_q\n", ["mine.yaml", "fine.lora_targets"]),
    ("sdedit: 3\n", ["mine.yaml", "sdedit", "mapping"]),
    ("- 1\n", ["mine.yaml", "top level"]),
    ("coarse: {steps: [\n", ["mine.yaml", "YAML"]),
    ("sdedit:\n  keep: 20\n", ["mine.yaml", "sdedit.keep", "candidates"]),
    ("sdedit:\n  strengths: [1.5]\n", ["mine.yaml", "sdedit.strengths"]),
    ("blend:\n  resolution: 100\n", ["mine.yaml", "blend.resolution", "multiple of 8"]),
    ("blend:\n  params:\n    c2f_layers: [3, 16]\n", ["mine.yaml", "blend.params.c2f_layers"]),
    ("blend:\n  params:\n    f2c_ratio: 1.2\n", ["mine.yaml", "blend.params.f2c_ratio"]),
    ("fine:\n  prompt_template: 'A {caption}.'\n", ["mine.yaml", "fine.prompt_template", "{token}"]),
    ("coarse:\n  token: 'two words'\n", ["mine.yaml", "coarse.token"]),
    ("precision: bfloat16\n", ["mine.yaml", "precision", "float16"]),
])
def test_bad_user_file_names_file_and_key(tmp_path, text, words):
    user = write(tmp_path / "mine.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_recipe(user)
    for word in words:
        assert word in str(err.value)


def test_missing_user_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nothing.yaml"):
        load_recipe(tmp_path / "nothing.yaml")


def test_recipe_round_trips_through_yaml(tmp_path):
    r = load_recipe(smoke=True)
    path = save_recipe(r, tmp_path / "recipe.yaml")
    assert load_recipe(path) == r
    assert load_yaml(path)["coarse"]["betas"] == [0.9, 0.999]
    with pytest.raises(StyleBlendError, match="already exists"):
        save_recipe(r, path)


def test_dataclasses_carry_no_default_values():
    for cls in (Recipe, SDEditConfig, CoarseConfig, FineConfig, BlendConfig, BlendParams):
        assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(cls)), cls


@pytest.mark.parametrize("template, values, expected", [
    ("A {prompt} in the style of {token}.", {"prompt": "Ice cream", "token": "<F>"},
     "An ice cream in the style of <F>."),
    ("A {prompt} in the style of {token}.", {"prompt": "Ring", "token": "<C>"}, "A ring in the style of <C>."),
    ("A {caption}, realistic.", {"caption": "apple"}, "An apple, realistic."),
])
def test_format_prompt_follows_the_original(template, values, expected):
    assert format_prompt(template, **values) == expected


def load_blend_params(set_name, style, path=None, base=None):
    """A style's settings from ``path`` (default: the packaged file of the set) over ``base`` (default: the
    recipe's blend.params), as a run with such a recipe sees them."""
    recipe = load_recipe()
    recipe.blend.params_file = str(path or "")
    if base is not None:
        recipe.blend.params = base
    return style_blend_params(recipe, set_name, style)[0]


def test_blend_params_layering(tmp_path):
    table = {"defaults": {"lora_scale": 0.1}, "a": {"c2f_ratio": 0.5, "seeds": {"Cat": 7}}, "b": {}}
    path = write(tmp_path / "mine.json", json.dumps(table))
    a = load_blend_params("mine", "a", path=path)
    assert (a.lora_scale, a.c2f_ratio, a.f2c_ratio) == (0.1, 0.5, 0.6)
    assert (a.seed_for("Cat"), a.seed_for("Dog")) == (7, 2024)
    base = BlendParams([1], [2], 0.9, 0.2, 0.3, {}, 5)
    b = load_blend_params("mine", "b", path=path, base=base)
    assert (b.c2f_layers, b.lora_scale, b.default_seed) == ([1], 0.1, 5)


@pytest.mark.parametrize("table, words", [
    ({"07": {"c2f_layers": [0, 16]}}, ["mine.json", "c2f_layers", "0-15"]),
    ({"07": {"f2c_layers": [-1]}}, ["mine.json", "f2c_layers"]),
    ({"07": {"c2f_ratio": 1.5}}, ["mine.json", "c2f_ratio"]),
    ({"07": {"f2c_ratio": -0.1}}, ["mine.json", "f2c_ratio"]),
    ({"07": {"scale": 0.3}}, ["mine.json", "07.scale"]),
    ({"defaults": {"seeds": {"Cat": "x"}}, "07": {}}, ["mine.json", "defaults.seeds"]),
    ([1, 2], ["mine.json", "JSON object"]),
])
def test_bad_blend_params_name_file_and_key(tmp_path, table, words):
    path = write(tmp_path / "mine.json", json.dumps(table))
    with pytest.raises(ConfigError) as err:
        load_blend_params("mine", "07", path=path)
    for word in words:
        assert word in str(err.value)


def test_blend_params_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="nope.json"):
        load_blend_params("mine", "00", path=tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="bad.json.*JSON"):
        load_blend_params("bad", "00", path=write(tmp_path / "bad.json", "{"))


def test_missing_blend_settings_fall_back_with_a_warning(tmp_path):
    recipe = load_recipe()
    params, warning = style_blend_params(recipe, "nope", "00")
    assert params == recipe.blend.params and "set 'nope' has no packaged blend parameters" in warning
    recipe.blend.params_file = str(write(tmp_path / "mine.json", json.dumps({"defaults": {"lora_scale": 0.1}})))
    params, warning = style_blend_params(recipe, "mine", "07")
    assert params.lora_scale == 0.1 and "no entry for style 07" in warning


def test_packaged_blend_files_cover_their_prompts():
    for set_name in ("B", "demo"):
        table = json.loads((CONFIG_DIR / "blend" / f"{set_name}.json").read_text())
        styles = sorted(p.name for p in (ROOT / "data" / set_name).iterdir() if p.is_dir())
        assert sorted(k for k in table if k != "defaults") == styles
        for style in styles:
            params = load_blend_params(set_name, style)
            prompts = json.loads((ROOT / "data" / set_name / style / "prompt.json").read_text()).values()
            assert not params.seeds or set(params.seeds) == set(prompts)


@pytest.mark.skipif(not SHARED_PARAMS.is_file(), reason="needs ../shared/data/B_blend_parameters.json")
def test_B_params_match_the_original():
    original = json.loads(SHARED_PARAMS.read_text())
    for style, o in original.items():
        p = load_blend_params("B", style)
        assert p.c2f_layers == o["c2f_self_attn_layers_to_register"]
        assert p.f2c_layers == o["f2c_self_attn_layers_to_register"]
        assert (p.lora_scale, p.c2f_ratio, p.f2c_ratio) == (o["scale"], o["c2f_step_ratio"], o["f2c_step_ratio"])
        assert {prompt: p.seed_for(prompt) for prompt in o["seed"]} == o["seed"]
    assert load_blend_params("B", "00").lora_scale == 0.5


# ---- io ------------------------------------------------------------------------------------------------------

def test_write_atomic_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out" / "weights.bin"

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, broken)
    assert list(target.parent.iterdir()) == []


def test_write_atomic_refuses_to_replace_unless_asked(tmp_path):
    target = write(tmp_path / "mine.txt", "user data")
    with pytest.raises(StyleBlendError, match="mine.txt"):
        write_atomic(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "user data"
    write_atomic(target, lambda tmp: tmp.write_text("new"), overwrite=True)
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


def test_safetensors_round_trip_and_errors(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones((2, 2), np.float16).T}
    path = save_safetensors(tmp_path / "w.safetensors", arrays, {"token": "<F>"})
    back = load_safetensors(path)
    assert set(back) == {"a", "b"} and back["b"].dtype == np.float16
    np.testing.assert_array_equal(back["a"], arrays["a"])
    assert load_safetensors_metadata(path) == {"token": "<F>"}
    with pytest.raises(ModelLoadError, match="missing.safetensors"):
        load_safetensors(tmp_path / "missing.safetensors")
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        load_safetensors(write(tmp_path / "junk.safetensors", "not a header"))


def test_save_image_and_yaml(tmp_path):
    img = Image.new("RGB", (4, 2), (10, 20, 30))
    path = save_image(img, tmp_path / "a" / "x.png")
    assert Image.open(path).getpixel((3, 1)) == (10, 20, 30)
    with pytest.raises(StyleBlendError, match="x.webm"):
        save_image(img, tmp_path / "x.webm")
    y = save_yaml(tmp_path / "c.yaml", {"b": 1, "a": [1, 2]})
    assert load_yaml(y) == {"b": 1, "a": [1, 2]} and y.read_text().startswith("b:")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "bench" / "recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_bench_recipes_load_and_only_shorten_the_run(path):
    """The benches' recipe files are valid overlays that change step counts alone (sizes stay the real ones)."""
    recipe, default = load_recipe(path), load_recipe()
    assert recipe.sdedit.resolution == default.sdedit.resolution == recipe.blend.resolution
    assert recipe.coarse.steps < default.coarse.steps and recipe.fine.ti_steps < default.fine.ti_steps
    assert recipe.blend.steps < default.blend.steps and recipe.sdedit.candidates <= default.sdedit.candidates
