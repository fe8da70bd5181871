"""The toy world: deterministic captioned pictures, held-out styles, a style set laid out like B."""
import json
import re

import numpy as np
import pytest

from styleblend.data import load_style, select_styles
from styleblend.errors import ConfigError
from styleblend.toyworld import (ANYWHERE, COLOURS, HELD_OUT_STYLES, OBJECTS, PRETRAIN_STYLES, STYLES, Scene, draw,
                                 mask, object_share, pretraining_pairs, sample_scene, write_style_set)


def test_same_seed_same_pictures_and_captions():
    a, b = pretraining_pairs(6, seed=3), pretraining_pairs(6, seed=3)
    assert [c for _, c in a] == [c for _, c in b]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for (x, _), (y, _) in zip(a, b))
    assert [c for _, c in pretraining_pairs(6, seed=4)] != [c for _, c in a]


def test_pretraining_texts_read_as_prompts():
    texts = [text for _, text in pretraining_pairs(200, seed=1)]
    assert all(t.startswith(("A ", "An ")) and t.endswith(".") for t in texts)
    assert any(t.startswith("An orange ") for t in texts) and not any(t.startswith("A orange") for t in texts)
    assert any(" in the style of " in t for t in texts), "the method's phrasing is learned in pretraining"
    assert any(" background" not in t for t in texts) and any(t.endswith("background.") for t in texts)


def test_held_out_styles_never_appear_in_pretraining():
    assert not set(HELD_OUT_STYLES) & set(PRETRAIN_STYLES) and set(STYLES) == set(HELD_OUT_STYLES + PRETRAIN_STYLES)
    named = [re.search(r"(?:, | in the style of )(\w+)\.$", text) for _, text in pretraining_pairs(200, seed=0)]
    assert {m.group(1) for m in named if m} == set(PRETRAIN_STYLES)


@pytest.mark.parametrize("obj", OBJECTS)
def test_a_flat_picture_shows_its_caption(obj):
    """Inside the object the caption's colour, outside the background's: the world's ground truth is exact."""
    scene = sample_scene(np.random.default_rng(OBJECTS.index(obj)), obj=obj)
    pixels, inside = np.asarray(draw(scene, "flat", 64)), np.asarray(mask(scene, 64)) > 0
    assert inside.mean() > 0.05, "the object covers a visible part of the picture"
    assert (pixels[inside] == COLOURS[scene.colour]).all(axis=1).mean() > 0.95
    assert (pixels[~inside] == COLOURS[scene.background]).all(axis=1).mean() > 0.95
    assert scene.caption == f"{scene.colour} {obj} on a {scene.background} background"


def test_objects_stay_within_their_spread_and_whole():
    rng = np.random.default_rng(0)
    for spread in (ANYWHERE, 0.1, 0.0):
        scenes = [sample_scene(rng, spread=spread) for _ in range(200)]
        offsets = np.abs([[s.x - 0.5, s.y - 0.5] for s in scenes])
        assert offsets.max() <= spread + 1e-12
        assert all(s.r + 0.04 <= min(s.x, s.y) and max(s.x, s.y) <= 1 - s.r - 0.04 for s in scenes), "never cut"
    assert offsets.max() == 0.0, "spread 0: every object centred"
    assert np.array([[s.x, s.y] for s in (sample_scene(rng) for _ in range(200))]).std() > 0.05, "by default anywhere"
    with pytest.raises(ConfigError, match="spread must be between 0 and 0.5.*0.7"):
        sample_scene(rng, spread=0.7)


def test_anywhere_draws_the_pairs_the_committed_toy_model_was_pretrained_on():
    """The committed weights' pretraining pairs: the scenes of ``spread`` = ANYWHERE must not move."""
    scene = sample_scene(np.random.default_rng(0))
    assert (scene.obj, scene.colour, scene.background) == ("sun", "pink", "blue")
    assert (scene.x, scene.y, scene.r) == (0.2726875610132525, 0.6472891262614819, 0.22491682287234335)


def test_the_nearer_the_centre_the_more_the_object_word_tells():
    """At high noise a denoiser learns the object's shape only from what its name predicts of the picture."""
    shares = [object_share(spread, scenes=60) for spread in (ANYWHERE, 0.06, 0.0)]
    assert shares[0] < 0.1 < 0.2 < shares[1] < shares[2], shares


def test_every_style_draws_something_different():
    scene = Scene("fish", "red", "blue", 0.5, 0.5, 0.3)
    pictures = [np.asarray(draw(scene, style, 48), np.int16) for style in STYLES]
    assert all(p.shape == (48, 48, 3) for p in pictures)
    assert all(np.abs(a - b).mean() > 5 for i, a in enumerate(pictures) for b in pictures[i + 1:])
    with pytest.raises(ConfigError, match="unknown toy style 'oil'"):
        draw(scene, "oil")


def test_style_set_is_laid_out_like_B_and_never_overwrites(tmp_path):
    written = write_style_set(tmp_path, styles=("dots", "hatch"), references=3, seed=1)
    assert select_styles(tmp_path, None) == ["dots", "hatch"]
    style = load_style(tmp_path, "dots")
    assert len(style.images) == 3 and len({i.caption.split()[1] for i in style.images}) == 3
    assert all(i.caption.endswith("background") for i in style.images)
    prompts = [p.lower().split() for p in style.prompts.values()]
    assert [obj for _, obj in prompts] == list(OBJECTS) and all(colour in COLOURS for colour, _ in prompts)
    assert len({colour for colour, _ in prompts}) == len(COLOURS), "every colour once"
    (tmp_path / "dots" / "prompt.json").write_text(json.dumps({"0": "Mine"}))
    assert write_style_set(tmp_path, styles=("dots", "hatch"), references=3, seed=1) == []
    assert load_style(tmp_path, "dots").prompts == {"0": "Mine"} and len(written) == 9
