"""The whole chain on the tiny model (smoke recipe): outputs, resume, no silent overwrite, CLI errors."""
from pathlib import Path

import pytest

from styleblend.runners.cli import main
from styleblend.reproduce import reproduce

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    lines = []
    summaries = reproduce("demo", DEMO, root / "result", root / "checkpoints", styles=["dots"], smoke=True,
                          echo=lines.append)
    return root, summaries, lines


def test_chain_writes_images_checkpoints_and_a_summary(run):
    root, summaries, lines = run
    images = sorted((root / "result" / "demo" / "dots").glob("*.png"))
    assert len(images) == 3
    from PIL import Image
    assert all(Image.open(p).size == (512, 512) for p in images)
    ckpt = root / "checkpoints" / "demo" / "dots"
    for name in ("coarse_embeds", "fine_embeds", "text_encoder_lora", "unet_lora"):
        assert (ckpt / f"{name}.safetensors").is_file()
    assert summaries[0].style == "dots" and len(summaries[0].written) >= 7
    assert any(line.startswith("style dots:") for line in lines)
    assert any("TINY model" in line for line in lines), "the tiny-model banner"


def test_rerun_skips_everything_and_keeps_files(run):
    root, _, _ = run
    ckpt = root / "checkpoints" / "demo" / "dots" / "unet_lora.safetensors"
    before = ckpt.stat().st_mtime_ns
    summary = reproduce("demo", DEMO, root / "result", root / "checkpoints", styles=["dots"], smoke=True,
                        echo=lambda _: None)[0]
    assert summary.skipped == ["coarse", "fine"] and summary.written == []
    assert ckpt.stat().st_mtime_ns == before


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["reproduce", "--smoke", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]
    assert main(["generate", "--smoke", "--set", "demo", "--data", str(DEMO), "--styles", "zz"]) == 2
    assert "zz" in capsys.readouterr().err


def test_chain_in_float16_follows_float32(run, tmp_path):
    """`precision: float16` through the whole chain (SDEdit, both trainings, generation) makes the float32 run's
    images up to float16 rounding."""
    import numpy as np
    from PIL import Image

    root, _, _ = run
    recipe = tmp_path / "half.yaml"
    recipe.write_text("precision: float16\n")
    reproduce("demo", DEMO, tmp_path / "result", tmp_path / "checkpoints", styles=["dots"], config=str(recipe),
              smoke=True, echo=lambda _: None)
    images = sorted((root / "result" / "demo" / "dots").glob("*.png"))
    assert len(images) == 3
    differences = []
    for image in images:
        full, half = (np.asarray(Image.open(p), np.float32) for p in (image, tmp_path / image.relative_to(root)))
        differences.append(np.abs(full - half).mean())
    assert 0 < min(differences) and max(differences) < 3.0, differences  # measured: 1.4-1.6 / 255


def test_ablation_generates_and_scores_every_variant(run, tmp_path, capsys):
    """One folder of images per variant, each scored; the variants' images differ (same seeds, other sampling)."""
    import numpy as np
    from PIL import Image

    root, _, _ = run
    out = tmp_path / "ablation"
    assert main(["ablation", "--set", "demo", "--data", str(DEMO), "--styles", "dots", "--results",
                 str(root / "result"), "--checkpoints", str(root / "checkpoints"), "--out", str(out)]) == 0
    table = (out / "ablation.md").read_text()
    for name in ("CSB only", "FSB only", "Q injection only", "KV injection only", "StyleBlend (full)"):
        assert f"| {name} | " in table
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 5 and all(len(list((out / f / "demo" / "dots").glob("*.png"))) == 3 for f in folders)
    first = {f: np.asarray(Image.open(sorted((out / f / "demo" / "dots").glob("*.png"))[0]), np.int16)
             for f in folders}
    assert np.abs(first["CSB_only"] - first["FSB_only"]).mean() > 0.5
    assert "hist" in table and "table: " in capsys.readouterr().out


def test_ablation_keeps_its_images_and_remakes_those_something_else_made(run, tmp_path, capsys):
    """A rerun reuses the images; another seed (as another model or a retrained style) remakes them, saying why.
    Each set has its own folder, so a style of the same name in another set is never scored in its place."""
    root, _, _ = run
    out = tmp_path / "ablation"
    args = ["ablation", "--set", "demo", "--data", str(DEMO), "--styles", "dots", "--results", str(root / "result"),
            "--checkpoints", str(root / "checkpoints"), "--out", str(out)]
    assert main(args) == 0
    images = sorted(out.glob("*/demo/dots/*.png"))
    made = {p: p.stat().st_mtime_ns for p in images}
    assert len(images) == 15
    capsys.readouterr()
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in images} == made and "generating them again" not in capsys.readouterr().out
    assert main(args + ["--seed", "7"]) == 0
    said = capsys.readouterr().out
    assert said.count("images made with another seed; generating them again") == 5
    assert all(p.stat().st_mtime_ns != made[p] for p in images)


def test_notebook_06_leaves_a_real_models_ablation_to_the_command(tmp_path):
    """On a real model the ablation would generate five times notebook 05's images: notebook 06 says how to run it
    instead, and generates nothing."""
    from types import SimpleNamespace

    from styleblend.ablation import style_ablation
    from styleblend.run_context import SetPaths

    run = SimpleNamespace(smoke=False, style="dots", model="/models/sd21", output_root=tmp_path,
                          paths=SetPaths("demo", DEMO, tmp_path / "result", tmp_path / "checkpoints"))
    text = style_ablation(run)
    assert text.startswith("Not run here") and "styleblend ablation --set demo" in text and "--styles dots" in text
    assert list(tmp_path.iterdir()) == []
