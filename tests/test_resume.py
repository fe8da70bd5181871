"""Resume reuses only what the same model, recipe and data made (issue: stale results reported as new).

Each test names the defect it guards: another model or recipe silently reused (1), a diverged run keeping a
checkpoint (2), temp files and half-written stages after a kill (4), checkpoints without identity and LoRA ranks
that clash in one process (8), two runs racing on one style (7).
"""
import json
import shutil
from pathlib import Path

import pytest

from styleblend.errors import DivergedError, ModelLoadError
from styleblend.locks import LockedError, style_lock
from styleblend.manifest import StaleError
from styleblend.reproduce import reproduce
from styleblend.runners.cli import main
from styleblend.checkpoints import StyleCheckpoint

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
quiet = dict(smoke=True, echo=lambda _: None)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished smoke run of style dots (results, checkpoints) to copy from."""
    root = tmp_path_factory.mktemp("done")
    reproduce("demo", DEMO, root / "result", root / "checkpoints", styles=["dots"], **quiet)
    return root


@pytest.fixture
def run_dir(done, tmp_path):
    """A private copy of the finished run."""
    shutil.copytree(done, tmp_path, dirs_exist_ok=True)
    return tmp_path


def mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def again(root: Path, **kwargs):
    return reproduce("demo", DEMO, root / "result", root / "checkpoints", styles=["dots"], **{**quiet, **kwargs})


def test_another_model_is_not_reused(run_dir):
    """(1) The same run with another model stops, says the model changed, and leaves every file alone."""
    from styleblend.sd.loading import write_tiny_sd

    other = write_tiny_sd(run_dir / "other-model", seed=1)
    before = mtimes(run_dir / "result") | mtimes(run_dir / "checkpoints")
    with pytest.raises(StaleError, match=r"another model.*other-model.*--force"):
        again(run_dir, model=str(other))
    assert mtimes(run_dir / "result") | mtimes(run_dir / "checkpoints") == before


def test_same_folder_other_weights_is_not_reused(run_dir, monkeypatch):
    """(1) A model folder whose weights changed in place is another model (the fingerprint, not the path)."""
    from styleblend.sd import loading

    home = run_dir / "home"
    monkeypatch.setenv("STYLEBLEND_HOME", str(home))
    loading.write_tiny_sd(loading.default_tiny_path(), seed=0)
    fresh = run_dir / "fresh"
    reproduce("demo", DEMO, fresh / "result", fresh / "checkpoints", styles=["dots"], **quiet)
    weights = loading.default_tiny_path() / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # another weight file of the same size
    weights.write_bytes(bytes(data))
    with pytest.raises(StaleError, match="same folder, other contents"):
        reproduce("demo", DEMO, fresh / "result", fresh / "checkpoints", styles=["dots"], **quiet)


def test_another_recipe_is_not_reused_and_force_replaces(run_dir):
    """(1) Another recipe stops the run naming the recipe; --force retrains and regenerates."""
    recipe = run_dir / "more.yaml"
    recipe.write_text("fine: {lora_steps: 4}\n")
    with pytest.raises(StaleError, match="fine stage.*recipe"):
        again(run_dir, config=str(recipe))
    summary = again(run_dir, config=str(recipe), force=True)[0]
    assert summary.skipped == [] and len([p for p in summary.written if p.suffix == ".png"]) >= 3
    manifest = json.loads((run_dir / "checkpoints/demo/dots/manifest.json").read_text())
    assert all(entry["complete"] for entry in manifest["stages"].values())


def test_files_without_a_manifest_are_not_adopted(run_dir):
    """(1) Checkpoints no manifest accounts for (another tool, an older run) are not silently reused."""
    (run_dir / "checkpoints/demo/dots/manifest.json").unlink()
    with pytest.raises(StaleError, match="records no .* stage"):
        again(run_dir)


def test_generation_after_retraining_is_not_reused(run_dir):
    """(1) Images made from checkpoints that were retrained since are stale."""
    ckpts = run_dir / "checkpoints2"
    recipe = run_dir / "other.yaml"
    recipe.write_text("seed: 7\n")
    reproduce("demo", DEMO, run_dir / "scratch", ckpts, styles=["dots"], config=str(recipe), **quiet)
    with pytest.raises(StaleError, match="generate stage"):
        reproduce("demo", DEMO, run_dir / "result", ckpts, styles=["dots"], config=str(recipe), **quiet)


def test_diverged_training_keeps_no_checkpoint_and_exits_non_zero(run_dir, capsys):
    """(2) A learning rate that sends the loss to NaN stops the run, names the stage and step, saves nothing."""
    recipe = run_dir / "hot.yaml"
    recipe.write_text("fine: {lora_lr: 1.0e+8}\n")
    out = run_dir / "nan"
    args = ["reproduce", "--smoke", "--set", "demo", "--data", str(DEMO), "--styles", "dots",
            "--results", str(out / "result"), "--checkpoints", str(out / "checkpoints"), "--config", str(recipe)]
    assert main(args) == 2
    assert "fine style UNet LoRA: the loss is nan at step" in capsys.readouterr().err
    folder = out / "checkpoints/demo/dots"
    assert not (folder / "unet_lora.safetensors").exists() and not (folder / "fine_embeds.safetensors").exists()
    assert not (out / "result/demo/dots").exists() or not list((out / "result/demo/dots").glob("*.png"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stages"]["fine"]["complete"] is False
    with pytest.raises(DivergedError):  # a rerun does not reuse anything of the broken stage
        reproduce("demo", DEMO, out / "result", out / "checkpoints", styles=["dots"], config=str(recipe), **quiet)


@pytest.mark.parametrize("text", ["blend: {guidance: .nan}\n", "coarse: {lr: .inf}\n"])
def test_non_finite_recipe_values_are_refused(tmp_path, text):
    """(2) NaN and Inf never reach training."""
    from styleblend.config import load_recipe
    from styleblend.errors import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml.*finite"):
        load_recipe(path)


def test_killed_run_leaves_nothing_that_blocks_resume(run_dir):
    """(4) Temp files of a killed write are removed, and a stage that lost a file is redone alone."""
    style_ckpt, results = run_dir / "checkpoints/demo/dots", run_dir / "result/demo/dots"
    for folder in (style_ckpt, results, style_ckpt / "sdedit"):
        (folder / ".Ring.0123abcd.tmp.png").write_bytes(b"half")
    (style_ckpt / "unet_lora.safetensors").unlink()  # a kill between the fine stage's two files
    manifest = json.loads((style_ckpt / "manifest.json").read_text())
    manifest["stages"]["fine"]["complete"] = False
    (style_ckpt / "manifest.json").write_text(json.dumps(manifest))
    coarse_before = mtimes(style_ckpt)[style_ckpt / "text_encoder_lora.safetensors"]
    summary = again(run_dir)[0]
    assert summary.skipped == ["coarse"]
    assert (style_ckpt / "unet_lora.safetensors").is_file()
    assert (style_ckpt / "text_encoder_lora.safetensors").stat().st_mtime_ns == coarse_before
    assert not list(run_dir.rglob("*.tmp.png"))


def test_checkpoint_of_another_style_is_refused(run_dir):
    """(8) A weight file copied from another style's folder is not used silently."""
    theirs = StyleCheckpoint(run_dir / "checkpoints", "demo", "dots")
    mine = StyleCheckpoint(run_dir / "checkpoints", "demo", "ink")
    mine.folder.mkdir(parents=True)
    shutil.copy(theirs.unet_lora, mine.unet_lora)
    with pytest.raises(ModelLoadError, match="saved for style dots"):
        mine.load_tensors("unet_lora")


def test_styles_with_different_lora_ranks_load_in_one_process(run_dir):
    """(8) Loading a style whose LoRA has another rank replaces the LoRA layers instead of failing."""
    from styleblend.fine import load_fine
    from styleblend.sd.loading import load_sd, resolve_model
    from styleblend.sd.models.lora import lora_layers

    recipe = run_dir / "rank2.yaml"
    recipe.write_text("fine: {lora_rank: 2}\n")
    reproduce("demo", DEMO, run_dir / "result", run_dir / "checkpoints", styles=["ink"], config=str(recipe),
              **quiet)
    sd = load_sd(resolve_model(None))
    ranks = []
    for style in ("dots", "ink", "dots"):
        load_fine(sd, StyleCheckpoint(run_dir / "checkpoints", "demo", style))
        ranks.append({layer.rank for layer in lora_layers(sd.unet).values()})
    assert ranks == [{4}, {2}, {4}]


def test_a_second_run_on_a_style_is_refused_naming_the_holder(run_dir):
    """(7) Two runs on one style folder do not race: the second is told who holds it."""
    with style_lock(StyleCheckpoint(run_dir / "checkpoints", "demo", "dots")):
        with pytest.raises(LockedError, match=r"style dots.*pid \d+"):
            again(run_dir)
