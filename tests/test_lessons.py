"""The notebooks' demonstrations (styleblend.lessons) and the figures they draw, on the tiny random model."""
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

import jittor as jt
from jittor import nn

from styleblend import figures, lessons
from styleblend.blend import InjectionPlan
from styleblend.config import load_recipe
from styleblend.data import read_images
from styleblend.errors import DataError
from styleblend.sdedit import SDEditResult
from styleblend.sd.loading import load_sd, write_tiny_sd
from styleblend.sd.models.lora import add_lora, lora_parameters

SIZE = 64


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return load_sd(write_tiny_sd(tmp_path_factory.mktemp("lessons") / "tiny-sd", seed=0))


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(smoke=True)


def flat(color, size=16):
    return Image.new("RGB", (size, size), color)


def pixels(image):
    return np.asarray(image, dtype=np.int16)


# ---- numbers and tables ---------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q = nn.Linear(8, 6, bias=False)
        self.to_k = nn.Linear(8, 6, bias=False)
        self.proj = nn.Linear(6, 4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])


def test_lora_parameter_count_matches_what_add_lora_adds_and_leaves_the_model_alone():
    net = Net()
    count = lessons.lora_parameter_count(net, ["to_q", "to_k"], rank=2)
    assert (count.layers, count.adapted, count.lora) == (4, 4 * 6 * 8, 4 * 2 * (6 + 8))
    assert count.model == lessons.parameter_count(net) == 2 * (2 * 48 + 6 * 4 + 4)
    assert not any("lora" in name for name, _ in net.named_parameters())
    add_lora(net, ["to_q", "to_k"], rank=2, alpha=2)
    assert sum(int(np.prod(p.shape)) for p in lora_parameters(net)) == count.lora
    assert "| 4 |" in count.markdown()
    with pytest.raises(ValueError, match="to_v"):
        lessons.lora_parameter_count(net, ["to_v"], rank=2)


def test_model_summary_lists_every_part_with_its_parameter_count(sd):
    table = lessons.model_summary(sd)
    assert f"{lessons.parameter_count(sd.unet):,}" in table
    assert f"{lessons.parameter_count(sd.vae):,}" in table
    assert "v_prediction" in table and "÷8" in table


def test_self_attention_layers_measures_each_layer_and_removes_its_hooks(sd):
    rows = lessons.self_attention_layers(sd, SIZE).splitlines()[2:]
    assert len(rows) == 16
    assert rows[0].startswith("| 0 | down | 8×8 | 16 |") and rows[6].startswith("| 6 | mid | 1×1 |")
    assert rows[15].startswith("| 15 | up | 8×8 |")
    assert all(block.attn1.hook is None for block in sd.unet.transformer_blocks())


def test_vary_copies_the_parameters(recipe):
    params = recipe.blend.params
    variants = lessons.vary(params, "c2f_ratio", [0.0, 1.0])
    assert list(variants) == ["c2f_ratio = 0.0", "c2f_ratio = 1.0"]
    assert variants["c2f_ratio = 1.0"] == dataclasses.replace(params, c2f_ratio=1.0)
    assert params.c2f_ratio == load_recipe(smoke=True).blend.params.c2f_ratio


# ---- folders ----------------------------------------------------------------------------------------------

def make_style(root, name):
    (root / name / "images").mkdir(parents=True)
    flat("red").save(root / name / "images" / "red_apple.png")
    (root / name / "prompt.json").write_text(json.dumps({"0": "Cat"}))


def test_style_id_maps_papermills_number_back_to_the_folder(tmp_path):
    for name in ("05", "07", "ink"):
        make_style(tmp_path, name)
    assert lessons.style_id(tmp_path, 5) == "05"
    assert lessons.style_id(tmp_path, "ink") == "ink"
    with pytest.raises(DataError, match="-r style"):
        lessons.style_id(tmp_path, 6)


def test_styles_with_results_lists_only_styles_that_have_a_result_folder(tmp_path):
    data, results = tmp_path / "data", tmp_path / "result"
    for name in ("00", "01", "02"):
        make_style(data, name)
    (results / "B" / "01").mkdir(parents=True)
    (results / "B" / "02").mkdir()
    assert lessons.styles_with_results(results, "B", data) == ["01", "02"]


def test_sdedit_table_marks_the_kept_candidates(tmp_path):
    candidates = [flat("red"), flat("green"), flat("blue")]
    kept = {"apple": [tmp_path / "apple-000.png", tmp_path / "apple-001.png"],
            "tree": [tmp_path / "tree-000.png"]}
    candidates[2].save(kept["apple"][0])
    candidates[0].save(kept["apple"][1])
    flat("white").save(kept["tree"][0])  # reused from an earlier run: no candidates this time
    rows, captions, marked = lessons.sdedit_table(SDEditResult(kept, {"apple": candidates}))
    assert captions == ["apple", "tree"]
    assert [len(r) for r in rows] == [3, 1]
    assert sorted(marked) == [(0, 0), (0, 2), (1, 0)]
    assert pixels(rows[1][0]).tolist() == pixels(flat("white")).tolist()


def test_read_images_names_a_file_it_cannot_read(tmp_path):
    flat("red").save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert read_images([tmp_path / "ok.png"])[0].mode == "RGB"
    with pytest.raises(DataError, match="bad.png"):
        read_images([tmp_path / "ok.png", tmp_path / "bad.png"])


# ---- sampling demonstrations -------------------------------------------------------------------------------

def test_denoising_trajectory_decodes_the_chosen_steps_ending_near_the_result(sd):
    trajectory = lessons.denoising_trajectory(sd, "a red apple", steps=4, seed=1, size=SIZE, frames=3)
    assert len(trajectory.frames) == 3 and trajectory.frames[0].size == (SIZE, SIZE)
    assert [t.split("\n")[0] for t in trajectory.titles] == ["step 1/4", "step 3/4", "step 4/4"]
    last = np.abs(pixels(trajectory.frames[-1]) - pixels(trajectory.image)).mean()
    first = np.abs(pixels(trajectory.frames[0]) - pixels(trajectory.image)).mean()
    assert last < 3 and last < first


def test_strength_grid_keeps_the_image_at_zero_and_changes_it_as_strength_grows(sd):
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    image = Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8))
    grid = lessons.strength_grid(sd, image, "a cat", [0.0, 0.5, 1.0], steps=4, seed=0, size=SIZE)
    assert len(grid) == 3
    change = [np.abs(pixels(g) - pixels(grid[0])).mean() for g in grid[1:]]
    assert 0 < change[0] < change[1]


def test_samples_switch_the_unet_lora_off_and_restore_it(tmp_path_factory):
    sd = load_sd(write_tiny_sd(tmp_path_factory.mktemp("lora") / "tiny-sd", seed=0))
    base = lessons.samples(sd, ["a cat"], steps=2, size=SIZE, seed=3)[0]
    add_lora(sd.unet, ["to_q", "to_v"], rank=2, alpha=2)
    for p in lora_parameters(sd.unet):
        p.assign(jt.ones(p.shape) * 0.5)
    off = lessons.samples(sd, ["a cat"], steps=2, size=SIZE, seed=3, unet_lora=0.0)[0]
    on = lessons.samples(sd, ["a cat"], steps=2, size=SIZE, seed=3)[0]
    assert np.abs(pixels(off) - pixels(base)).max() <= 1
    assert np.abs(pixels(on) - pixels(base)).mean() > 1


def test_ablation_panel_runs_each_mode_and_kv_alone_leaves_the_fsb_unchanged(sd, recipe):
    cfg = dataclasses.replace(recipe.blend, steps=2, output_size=SIZE)
    panel = lessons.ablation_panel(sd, sd.text_encoder.clone(), "cat", cfg.params, cfg, seed=0)
    assert list(panel) == list(lessons.ABLATIONS.values())
    assert panel["CSB only"].fsb is None and panel["FSB only"].csb is None
    kv, fsb = panel["KV injection only"], panel["FSB only"]
    assert np.abs(pixels(kv.fsb) - pixels(fsb.fsb)).max() <= 2
    assert np.abs(pixels(kv.csb) - pixels(panel["Q injection only"].csb)).mean() > 0


# ---- figures ------------------------------------------------------------------------------------------------

def test_figures_show_saves_the_png(tmp_path):
    fig = figures.image_table([[flat("red"), None], [flat("blue")]], ["a", "b"], ["x", "y"], marked=[(0, 0)])
    figures.show(fig, tmp_path / "f" / "table.png")
    assert Image.open(tmp_path / "f" / "table.png").size[0] > 100


def test_contact_sheet_puts_references_above_the_generated_rows():
    fig = figures.contact_sheet([flat("red")] * 3, [flat("blue")] * 7, ncols=5)
    assert len(fig.axes) == 5 * (1 + 2)
    assert sum(bool(ax.images) for ax in fig.axes) == 10


def test_injection_map_draws_the_plan_cell_by_cell(recipe):
    params = dataclasses.replace(recipe.blend.params, c2f_layers=[4, 5], f2c_layers=[5, 15], c2f_ratio=0.5,
                                 f2c_ratio=0.25)
    plan = InjectionPlan.for_mode(params, 4)
    grid = figures.injection_map(plan).axes[0].images[0].get_array()
    assert grid[4].tolist() == [1, 1, 0, 0]   # queries only
    assert grid[5].tolist() == [3, 3, 0, 0]   # both lists: both exchanges on the c2f schedule
    assert grid[15].tolist() == [2, 0, 0, 0]  # keys/values on the f2c schedule
    assert grid[0].tolist() == [0, 0, 0, 0]


def test_score_bars_leave_out_columns_nobody_computed():
    rows = [dataclasses.make_dataclass("S", ["style", "hist", "dino"])("00", 0.4, None),
            dataclasses.make_dataclass("S", ["style", "hist", "dino"])("01", -0.1, None)]
    fig = figures.score_bars(rows, ["hist", "dino"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["hist"]
    with pytest.raises(ValueError):
        figures.score_bars(rows, ["dino"])
