"""Every selected style's inputs are checked before any training (issue: errors after the expensive part, 3)."""
import json
import shutil
from pathlib import Path

import pytest

from styleblend.config import load_recipe, style_blend_params
from styleblend.data import MAX_NAME_BYTES, result_name
from styleblend.errors import ConfigError, DataError
from styleblend.reproduce import reproduce
from styleblend.validate import validate_styles

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def copy_set(tmp_path, name="demo", styles=("dots",)) -> Path:
    root = tmp_path / name
    for style in styles:
        shutil.copytree(DEMO / style, root / style)
    return root


def test_a_later_styles_bad_prompts_stop_the_run_before_any_training(tmp_path):
    """(3) A broken prompt.json of the second style is reported before the first style trains."""
    data = copy_set(tmp_path, styles=("dots", "ink"))
    (data / "ink" / "prompt.json").write_text('{"0": ""}')
    (data / "stripes").mkdir()
    shutil.copytree(DEMO / "stripes" / "images", data / "stripes" / "images")  # no prompt.json at all
    with pytest.raises(DataError) as err:
        reproduce("demo", data, tmp_path / "result", tmp_path / "checkpoints", smoke=True, echo=lambda _: None)
    assert "2 problem(s)" in str(err.value) and "ink" in str(err.value) and "stripes" in str(err.value)
    assert not (tmp_path / "checkpoints" / "demo" / "dots").exists()


def test_long_prompts_get_file_names_that_fit_and_a_note(tmp_path):
    """(3) A 300-word prompt, and one of 241-255 bytes, no longer fail after training (File name too long)."""
    data = copy_set(tmp_path)
    long_prompt = " ".join(["word"] * 300)
    edge_prompt = "x" * 246  # "<prompt>.png" fits; a temp file named after it once did not
    (data / "dots" / "prompt.json").write_text(json.dumps({"0": long_prompt, "1": edge_prompt}))
    lines = []
    reproduce("demo", data, tmp_path / "result", tmp_path / "checkpoints", smoke=True, echo=lines.append)
    names = sorted(p.name for p in (tmp_path / "result" / "demo" / "dots").glob("*.png"))
    assert names == sorted([result_name(long_prompt), f"{edge_prompt}.png"])
    assert all(len(n.encode()) <= MAX_NAME_BYTES for n in names)
    assert any("longer than a file name allows" in line for line in lines)
    assert any("longer than the text encoder's 77 tokens" in line for line in lines)


def test_result_names_are_stable_and_distinct():
    a, b = "word " * 100 + "cat", "word " * 100 + "dog"
    assert result_name(a) == result_name(a) != result_name(b)
    assert result_name("Ring") == "Ring.png"


def test_a_set_without_blend_parameters_runs_with_a_warning(tmp_path):
    """(3) A set with no packaged blend settings uses the recipe's, says so before training, and the user can
    give a file of their own (blend.params_file, relative to the recipe) instead of editing the package."""
    data = copy_set(tmp_path, name="mine")
    lines = []
    reproduce("mine", data, tmp_path / "result", tmp_path / "checkpoints", smoke=True, echo=lines.append)
    assert any("set 'mine' has no packaged blend parameters" in line for line in lines)
    assert len(list((tmp_path / "result" / "mine" / "dots").glob("*.png"))) == 3

    (tmp_path / "blend.json").write_text(json.dumps({"dots": {"lora_scale": 0.9}}))
    (tmp_path / "recipe.yaml").write_text("blend: {params_file: blend.json}\n")
    params, warning = style_blend_params(load_recipe(tmp_path / "recipe.yaml"), "mine", "dots")
    assert (params.lora_scale, warning) == (0.9, "")
    (tmp_path / "recipe.yaml").write_text("blend: {params_file: missing.json}\n")
    with pytest.raises(ConfigError, match="missing.json"):
        style_blend_params(load_recipe(tmp_path / "recipe.yaml"), "mine", "dots")


def test_validation_lists_conversions(tmp_path):
    from PIL import Image

    data = copy_set(tmp_path)
    image = next((data / "dots" / "images").iterdir())
    Image.open(image).convert("P").save(image)
    inputs = validate_styles(data, ["dots"], load_recipe(smoke=True), "demo")
    assert list(inputs.styles) == ["dots"] and inputs.styles["dots"].images[0].image.mode == "RGB"
    notes = inputs.notes
    assert any(f"{image.name}: converted P to 8-bit RGB" in note for note in notes)
