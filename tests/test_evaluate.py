"""The challenge score: colour histograms, the formula, not-computed terms, models that fail to load, incomplete
result sets, folder errors, CSV, the command, tiny models."""
import importlib.util
import json
import re
import string

import numpy as np
import pytest
from PIL import Image

from styleblend.data import result_name
from styleblend.errors import DataError, ModelLoadError
from styleblend.evaluate import (COLUMNS, IMAGE_SIZE, EvalModels, clip_r_hits, combine, evaluate_set, evaluate_style,
                                 frechet_distance, hist_similarity, markdown_table, read_csv)
from styleblend.runners.cli import main

RED, DARK_RED, BLUE = (255, 0, 0), (128, 0, 0), (0, 0, 255)
PROMPTS = {"0": "Ring", "1": "Dog", "2": "Cat"}
TWO, ONE = {"0": "Ring", "1": "Dog"}, {"0": "Ring"}


def solid(colour, size=32):
    return Image.new("RGB", (size, size), colour)


def noise(seed, size=32):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_set(tmp_path, refs, results, prompts=PROMPTS):
    """``data/00`` with ``refs`` {name: image}, and ``results/B/00`` with ``results`` {prompt: image}."""
    data, out = tmp_path / "data", tmp_path / "results" / "B" / "00"
    (data / "00" / "images").mkdir(parents=True)
    (data / "00" / "prompt.json").write_text(json.dumps(prompts))
    for name, img in refs.items():
        img.save(data / "00" / "images" / f"{name}.png")
    out.mkdir(parents=True)
    for prompt, img in results.items():
        img.save(out / f"{prompt}.png")
    return data, tmp_path / "results"


# ---------------------------------------------------------------- Hist
def test_hist_identical_images_score_one():
    assert hist_similarity([noise(0)], [noise(0)]) == pytest.approx(1.0)


def test_hist_disjoint_colours_score_low():
    assert hist_similarity([solid(RED)], [solid(BLUE)]) < 0.2


def test_hist_is_normalised_so_image_size_does_not_matter():
    half = np.zeros((20, 20, 3), np.uint8)
    half[:10], half[10:] = RED, BLUE
    big = Image.fromarray(half).resize((80, 80), Image.NEAREST)
    assert hist_similarity([big], [Image.fromarray(half)]) == pytest.approx(1.0)


def test_hsv_part_is_hue_only():
    # same hue, other brightness: RGB bins disjoint (≈0), hue bins equal (1) → about one half
    assert hist_similarity([solid(RED)], [solid(DARK_RED)]) == pytest.approx(0.5, abs=0.01)


def test_hist_compares_with_the_mean_reference_histogram():
    # the references average to half red / half blue; a red image matches that better than a green one
    refs = [solid(RED), solid(BLUE)]
    assert hist_similarity([solid(RED)], refs) > hist_similarity([solid((0, 255, 0))], refs) + 0.3


# ---------------------------------------------------------------- formula
def test_combine_formula_by_hand():
    style, text, quality, final = combine(dino=0.5, hist=0.6, lpips=0.3, clip_r=0.8, fid=10.0, clip_iqa=0.7)
    assert style == pytest.approx(0.2 * 0.5 + 0.4 * 0.6 + 0.4 * 0.7)  # 0.62
    assert text == pytest.approx(0.4)
    assert quality == pytest.approx(0.4 * 0.5 + 0.07)  # 0.27
    assert final == pytest.approx(0.62 * 0.67)


def test_combine_caps_fid_at_twenty():
    assert combine(0.5, 0.5, 0.5, 0.5, 35.0, 0.4)[2] == pytest.approx(0.04)
    assert combine(0.5, 0.5, 0.5, 0.5, 0.0, 0.4)[2] == pytest.approx(0.44)


def test_combine_propagates_none():
    style, text, quality, final = combine(0.5, 0.6, None, 0.8, 10.0, 0.7)
    assert style is None and final is None
    assert text == pytest.approx(0.4) and quality == pytest.approx(0.27)
    assert combine(0.5, 0.6, 0.3, 0.8, None, 0.7)[2:] == (None, None)


def test_frechet_distance_of_a_scaled_copy():
    a = np.random.default_rng(0).normal(1.0, 1.0, (200, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # b = 2a: |μ_a − μ_b|² = |μ_a|², and tr(C + 4C − 2·2C) = tr(C)
    expected = a.mean(0) @ a.mean(0) + np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, 2 * a) == pytest.approx(expected)


def test_clip_r_counts_a_hit_only_in_the_top_five():
    sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]] * 2)
    assert clip_r_hits(sims, [4, 5]).tolist() == [True, False]


# ---------------------------------------------------------------- offline run, CSV, table
def test_offline_set_computes_hist_only_and_says_why(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED), "ball": noise(1)}, {"Ring": solid(RED), "Dog": noise(2)},
                             TWO)
    csv_path = tmp_path / "scores.csv"
    scores = evaluate_set("B", results, data, models=EvalModels(), out_csv=csv_path, size=32)
    assert [s.style for s in scores] == ["00", "mean"]
    style, mean = scores
    assert 0.0 < style.hist < 1.0 and mean.hist == pytest.approx(style.hist)
    for column in ("dino", "lpips", "clip_r", "fid", "clip_iqa", "style_score", "text_score", "quality_score",
                   "final"):
        assert getattr(style, column) is None
        assert style.reasons[column].startswith("not computed: ")
    assert "EvalModels.dino" in style.reasons["dino"] and "needs dino, lpips" in style.reasons["style_score"]

    lines = csv_path.read_text().splitlines()
    assert lines[0] == ("style,dino,hist,lpips,clip_r,fid,clip_iqa,style_score,text_score,quality_score,final")
    assert lines[1] == f"00,,{style.hist!r},,,,,,,," and lines[2].startswith("mean,,")
    back = read_csv(csv_path)
    assert [(s.style, [getattr(s, c) for c in COLUMNS[1:]]) for s in back] == \
           [(s.style, [getattr(s, c) for c in COLUMNS[1:]]) for s in scores]

    table = markdown_table(scores)
    assert table.splitlines()[0].startswith("| style | dino | hist |") and "—" in table
    assert "- dino: not computed: no weights given" in table


def test_a_model_asked_for_that_is_missing_is_an_error_naming_it(tmp_path):
    pytest.importorskip("torch")
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED)}, ONE)
    missing = tmp_path / "no_dinov2"
    with pytest.raises(ModelLoadError, match=f"DINOv2 weights {re.escape(str(missing))}: no such file or folder"):
        evaluate_style(results / "B" / "00", data / "00", EvalModels(dino=str(missing)), size=32)


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_a_model_asked_for_that_cannot_load_is_an_error_naming_it_and_the_cause(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED)}, ONE)
    clip = tmp_path / "garbage_clip"
    clip.mkdir()
    (clip / "config.json").write_text("not json {")
    (clip / "model.safetensors").write_bytes(b"\0garbage")
    with pytest.raises(ModelLoadError, match=f"CLIP weights {re.escape(str(clip))}: could not load"):
        evaluate_set("B", results, data, models=EvalModels(clip=str(clip)), size=32)
    fid = tmp_path / "inception.pt"
    fid.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match=f"FID Inception file {re.escape(str(fid))}: could not load"):
        evaluate_set("B", results, data, models=EvalModels(fid=str(fid)), size=32)


def test_lpips_asked_for_without_its_package_is_an_error(tmp_path):
    pytest.importorskip("torch")
    if importlib.util.find_spec("lpips"):
        pytest.skip("the lpips package is installed here")
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED)}, ONE)
    with pytest.raises(ModelLoadError, match="LPIPS: package lpips is not installed"):
        evaluate_style(results / "B" / "00", data / "00", EvalModels(lpips=True), size=32)


# ---------------------------------------------------------------- folder errors
def test_missing_results_folder_names_it(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED)})
    with pytest.raises(DataError, match="elsewhere"):
        evaluate_set("B", tmp_path / "elsewhere", data)


def test_missing_style_folder_in_results_names_it(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED)})
    (data / "01" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"results/B: no result folder for style\(s\) 01"):
        evaluate_set("B", results, data)


def test_no_png_results_is_an_error(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {})
    with pytest.raises(DataError, match=r"B/00: no \.png"):
        evaluate_set("B", results, data)


def test_result_not_named_after_a_prompt_is_reported(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED), "Unicorn": solid(RED)})
    with pytest.raises(DataError, match=r"Unicorn\.png not named after a prompt of .*prompt\.json"):
        evaluate_set("B", results, data)


def test_missing_reference_images_is_an_error(tmp_path):
    data, results = make_set(tmp_path, {}, {"Ring": solid(RED)}, ONE)
    with pytest.raises(DataError, match="images: no reference images"):
        evaluate_set("B", results, data, size=32)


# ---------------------------------------------------------------- complete result sets
def test_an_incomplete_result_set_is_refused_naming_the_folder_and_the_prompts(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED)})
    with pytest.raises(DataError, match=r"results/B/00: no image for 2 of 3 prompts \(Dog, Cat\)"):
        evaluate_set("B", results, data, size=32)
    with pytest.raises(DataError, match=r"results/B/00: no image for 2 of 3 prompts \(Dog, Cat\)"):
        evaluate_style(results / "B" / "00", data / "00", size=32)


def test_wrong_size_images_are_refused_naming_them_and_their_size(tmp_path):
    assert IMAGE_SIZE == 512
    images = {"Ring": solid(RED, IMAGE_SIZE), "Dog": solid(RED, 256), "Cat": solid(RED, IMAGE_SIZE)}
    data, results = make_set(tmp_path, {"apple": solid(RED)}, images)
    with pytest.raises(DataError, match=r"results/B/00: Dog\.png is 256x256, not 512x512"):
        evaluate_set("B", results, data)


def test_allow_partial_scores_what_is_there_and_the_table_flags_it(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED), "Dog": solid(BLUE, 16)})
    style, mean = evaluate_set("B", results, data, size=32, allow_partial=True)
    assert style.hist is not None
    assert style.incomplete == ["no image for 1 of 3 prompts (Cat)", "Dog.png is 16x16, not 32x32"]
    assert mean.incomplete == ["includes incomplete style(s) 00"]
    table = markdown_table([style, mean])
    assert "| 00 (incomplete) |" in table and "| mean (incomplete) |" in table
    assert "- 00 incomplete: no image for 1 of 3 prompts (Cat)" in table.splitlines()
    complete = make_set(tmp_path / "complete", {"apple": solid(RED)}, {p: solid(RED) for p in PROMPTS.values()})
    assert "incomplete" not in markdown_table(evaluate_set("B", complete[1], complete[0], size=32))


def test_a_prompt_too_long_for_a_file_name_is_found_under_its_short_name(tmp_path):
    long = "a lighthouse on a cliff at dusk " * 10
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {}, {"0": "Ring", "1": long})
    solid(RED).save(results / "B" / "00" / "Ring.png")
    solid(RED).save(results / "B" / "00" / result_name(long))
    [style, _] = evaluate_set("B", results, data, size=32)
    assert style.hist == pytest.approx(1.0) and style.incomplete == []


def test_hidden_files_in_a_results_folder_are_not_results(tmp_path):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {p: solid(RED) for p in PROMPTS.values()})
    (results / "B" / "00" / "._Ring.png").write_bytes(b"resource fork, not an image")
    [style, _] = evaluate_set("B", results, data, size=32)
    assert style.hist == pytest.approx(1.0) and style.incomplete == []


# ---------------------------------------------------------------- the command
def _cli(data, results, *options):
    return main(["evaluate", "--set", "B", "--data", str(data), "--results", str(results), *options])


def test_the_command_refuses_an_incomplete_set_unless_allow_partial(tmp_path, capsys):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {"Ring": solid(RED, IMAGE_SIZE)})
    assert _cli(data, results) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "no image for 2 of 3 prompts (Dog, Cat)" in err
    assert err.count("\n") == 1
    assert _cli(data, results, "--allow-partial") == 0
    assert "| 00 (incomplete) |" in capsys.readouterr().out


def test_the_command_fails_when_a_model_it_was_given_does_not_load(tmp_path, capsys):
    pytest.importorskip("torch")
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {p: solid(RED, IMAGE_SIZE) for p in PROMPTS.values()})
    missing = tmp_path / "no_dinov2"
    assert _cli(data, results, "--dino", str(missing)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: DINOv2 weights {missing}: no such file or folder\n"
    assert _cli(data, results) == 0, "a term not asked for is still only not computed"
    assert "dino: not computed: no weights given" in capsys.readouterr().out


def test_the_command_refuses_a_folder_as_out_before_scoring(tmp_path, capsys):
    data, results = make_set(tmp_path, {"apple": solid(RED)}, {p: solid(RED, IMAGE_SIZE) for p in PROMPTS.values()})
    assert _cli(data, results, "--out", str(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: --out {tmp_path} is a folder; give a CSV file name\n"


# ---------------------------------------------------------------- tiny random models (transformers + torch)
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    dino = root / "dino"
    tf.Dinov2Model(tf.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                   image_size=28, patch_size=14)).save_pretrained(dino)
    tf.BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(dino)

    clip = root / "clip"
    clip.mkdir()
    letters = list(string.ascii_lowercase + ".")
    vocab = {t: i for i, t in enumerate(letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"])}
    (clip / "vocab.json").write_text(json.dumps(vocab))
    (clip / "merges.txt").write_text("#version: 0.2\n")
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16)
    tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(clip)
    tokenizer = tf.CLIPTokenizer(str(clip / "vocab.json"), str(clip / "merges.txt"))
    images = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tf.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(clip)

    class ChannelStats(torch.nn.Module):  # stands in for the TorchScript Inception: features of [N, 3, H, W]
        def forward(self, x, return_features: bool = False):
            return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    fid = root / "inception.pt"
    torch.jit.script(ChannelStats()).save(str(fid))
    return {"dino": str(dino), "clip": str(clip), "fid": str(fid)}


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_tiny_models_give_real_terms(tiny_models, tmp_path):
    ref = noise(3, 40)
    data, results = make_set(tmp_path, {"apple": ref}, {"Ring": ref, "Dog": noise(4, 40)}, TWO)
    score = evaluate_style(results / "B" / "00", data / "00",
                           EvalModels(dino=tiny_models["dino"], clip=tiny_models["clip"], device="cpu"), size=40)
    assert -1.0 <= score.dino < 1.0  # one generated image is the reference itself, one is not
    assert score.clip_r == 1.0  # two prompts: every prompt is in the top five
    assert 0.0 < score.clip_iqa < 1.0 and score.text_score == 0.5
    assert score.lpips is None and score.style_score is None and score.final is None
    assert score.fid is None and score.quality_score is None and "fid" in score.reasons["quality_score"]


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_tiny_dino_and_fid_of_the_references_themselves(tiny_models, tmp_path):
    one = noise(5, 40)
    data, results = make_set(tmp_path, {"apple": one}, {"Ring": one}, ONE)
    score = evaluate_style(results / "B" / "00", data / "00", EvalModels(dino=tiny_models["dino"], device="cpu"),
                           size=40)
    assert score.dino == pytest.approx(1.0, abs=1e-5)

    refs = {"apple": noise(6, 40), "ball": noise(7, 40)}
    fid = EvalModels(fid=tiny_models["fid"], device="cpu")
    data, results = make_set(tmp_path / "fid", refs, {"Ring": refs["apple"], "Dog": refs["ball"]}, TWO)
    same = evaluate_style(results / "B" / "00", data / "00", fid, size=40)
    data, results = make_set(tmp_path / "fid2", refs, {"Ring": solid(RED, 40), "Dog": solid(BLUE, 40)}, TWO)
    other = evaluate_style(results / "B" / "00", data / "00", fid, size=40)
    assert same.fid == pytest.approx(0.0, abs=1e-3) and other.fid > 100.0
