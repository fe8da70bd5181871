"""Style folders: captions, image conversion notes, prompt.json rules, result paths, importing a downloaded set."""
import json
from pathlib import Path

import pytest
from PIL import Image

from styleblend.data import (caption_from_filename, import_images, list_styles, load_style, result_path)
from styleblend.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {"0": "Ring", "1": "Ice cream", "2": "Hotel"}


def make_style(root: Path, style="s", images=("red_apple.png",), prompts=PROMPTS, mode="RGB", size=(16, 16)) -> Path:
    folder = root / style
    (folder / "images").mkdir(parents=True)
    for name in images:
        Image.new(mode, size).save(folder / "images" / name)
    if prompts is not None:
        (folder / "prompt.json").write_text(prompts if isinstance(prompts, str) else json.dumps(prompts))
    return folder


@pytest.mark.parametrize("name, caption", [
    ("woman_walking_a_dog.png", "woman walking a dog"),
    ("Cherry_blossom.png", "cherry blossom"),
    ("/x/y/apple.jpg", "apple"),
])
def test_caption_from_filename(name, caption):
    assert caption_from_filename(name) == caption


def test_caption_from_filename_needs_a_name():
    with pytest.raises(DataError, match="__.png"):
        caption_from_filename("__.png")


def test_load_style_reads_images_and_prompts_in_file_order(tmp_path):
    prompts = '{"2": "Zebra", "0": "Apple", "1": "Milk"}'
    make_style(tmp_path, images=("woman_walking_a_dog.png", "apple.png"), prompts=prompts)
    data = load_style(tmp_path, "s")
    assert [i.caption for i in data.images] == ["apple", "woman walking a dog"]
    assert list(data.prompts.values()) == ["Zebra", "Apple", "Milk"]
    assert data.images[0].image.mode == "RGB" and data.notes == []
    assert data.folder == tmp_path / "s" and data.images[1].path.name == "woman_walking_a_dog.png"


@pytest.mark.parametrize("mode, note", [("L", "converted L to 8-bit RGB"), ("RGBA", "converted RGBA to 8-bit RGB"),
                                        ("P", "converted P to 8-bit RGB")])
def test_other_colour_modes_become_rgb_with_a_note(tmp_path, mode, note):
    make_style(tmp_path, mode=mode)
    data = load_style(tmp_path, "s")
    assert data.images[0].image.mode == "RGB"
    assert data.notes == [f"red_apple.png: {note}"]


def test_16_bit_grey_keeps_its_tones(tmp_path):
    """(6) A 16-bit PNG reference once became pure white; its grey levels now scale to 8 bits."""
    import numpy as np

    folder = make_style(tmp_path, images=())
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "images" / "ramp.png")
    pixels = np.asarray(load_style(tmp_path, "s").images[0].image)
    expected = np.round(ramp / 65535 * 255).astype(np.int16)
    assert np.abs(pixels[..., 0].astype(np.int16) - expected).max() <= 1
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_exif_orientation_turns_phone_photos_upright(tmp_path):
    """(6) A photo stored sideways with EXIF orientation 6 (rotate 90° clockwise) is read upright."""
    folder = make_style(tmp_path, images=())
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(folder / "images" / "photo.jpg", exif=exif, quality=95)
    data = load_style(tmp_path, "s")
    upright = data.images[0].image
    assert upright.size == (20, 40)
    assert any("EXIF orientation (6)" in note for note in data.notes)
    red, _, blue = upright.getpixel((10, 2))
    assert red > 200 and blue < 60  # the stored left half is now on top


def test_cmyk_becomes_rgb(tmp_path):
    folder = make_style(tmp_path, images=())
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "images" / "red.jpg")
    red, green, blue = load_style(tmp_path, "s").images[0].image.getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_transparency_goes_over_white(tmp_path):
    make_style(tmp_path, mode="RGBA")  # Image.new("RGBA") is fully transparent black
    assert load_style(tmp_path, "s").images[0].image.getpixel((0, 0)) == (255, 255, 255)


def test_non_square_images_are_centre_cropped_with_a_note(tmp_path):
    folder = make_style(tmp_path, size=(30, 20))
    img = Image.new("RGB", (30, 20), (0, 0, 0))
    img.paste((255, 0, 0), (5, 0, 25, 20))  # red exactly where the centre crop lands
    img.save(folder / "images" / "red_apple.png")
    data = load_style(tmp_path, "s", fit="crop")
    out = data.images[0].image
    assert out.size == (20, 20) and out.getcolors() == [(400, (255, 0, 0))]
    assert data.notes == ["red_apple.png: centre-cropped 30x20 to 20x20"]


def test_images_are_prepared_as_the_original_by_default(tmp_path):
    """The original reads a reference as Image.open(f).convert('RGB').resize((768, 768)): whole (squashed),
    PIL's bicubic. Ours keeps it whole and the training resize gives the same pixels."""
    import numpy as np
    from styleblend.sd.sampling import to_tensor

    folder = make_style(tmp_path, images=())
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "images" / "wide.png")
    data = load_style(tmp_path, "s")
    assert data.images[0].image.size == (60, 40) and "squashed to a square" in data.notes[0]
    original = np.asarray(Image.open(folder / "images" / "wide.png").convert("RGB").resize((64, 64)), np.float32)
    ours = (to_tensor([data.images[0].image], 64).numpy()[0].transpose(1, 2, 0) + 1) * 127.5
    np.testing.assert_allclose(ours, original, atol=1e-3)


def test_missing_style_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load_style(tmp_path, "nope")


def test_no_images(tmp_path):
    make_style(tmp_path, images=())
    with pytest.raises(DataError, match=f"{tmp_path / 's' / 'images'}.*no reference images"):
        load_style(tmp_path, "s")


@pytest.mark.parametrize("content", [b"not a png at all", None])
def test_corrupt_image_names_the_file(tmp_path, content):
    folder = make_style(tmp_path)
    path = folder / "images" / "red_apple.png"
    path.write_bytes(content if content else path.read_bytes()[:-30])  # garbage, or truncated data
    with pytest.raises(DataError, match="red_apple.png"):
        load_style(tmp_path, "s")


@pytest.mark.parametrize("prompts, message", [
    (None, "missing"),
    ("{not json", "not valid JSON"),
    ("[\"Ring\"]", "non-empty JSON object"),
    ("{}", "non-empty JSON object"),
    ('{"0": 3}', "prompt '0' must be a string"),
    ('{"0": ""}', "cannot name a result file"),
    ('{"0": "  "}', "cannot name a result file"),
    ('{"0": "cat/dog"}', "cannot name a result file"),
    ('{"0": ".."}', "cannot name a result file"),
    ('{"0": "Ring", "1": "Ring"}', "two prompts are the same"),
])
def test_bad_prompt_json_names_the_file(tmp_path, prompts, message):
    make_style(tmp_path, prompts=prompts)
    with pytest.raises(DataError) as err:
        load_style(tmp_path, "s")
    assert str(tmp_path / "s" / "prompt.json") in str(err.value) and message in str(err.value)


def test_list_styles(tmp_path):
    for style in ("b", "a"):
        make_style(tmp_path, style)
    (tmp_path / "notes").mkdir()
    (tmp_path / "c.txt").write_text("x")
    assert list_styles(tmp_path) == ["a", "b"]
    with pytest.raises(DataError, match="missing"):
        list_styles(tmp_path / "missing")


def test_result_path_keeps_the_prompt_spelling(tmp_path):
    assert result_path(tmp_path, "B", "06", "Ice cream") == tmp_path / "B" / "06" / "Ice cream.png"
    with pytest.raises(DataError, match="a/b"):
        result_path(tmp_path, "B", "06", "a/b")


def test_import_images_lays_out_both_shapes_and_never_overwrites(tmp_path):
    src, dst = tmp_path / "download", tmp_path / "data"
    make_style(src, "00", images=("apple.png", "ball.png"))  # <src>/<style>/images/*.png + prompt.json
    (src / "01").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(src / "01" / "dog.png")  # <src>/<style>/*.png
    (dst / "00" / "images").mkdir(parents=True)
    (dst / "00" / "images" / "apple.png").write_bytes(b"user's own file")
    (dst / "00" / "prompt.json").write_text('{"0": "Mine"}')

    done = import_images(src, dst)
    assert (dst / "00" / "images" / "apple.png").read_bytes() == b"user's own file"
    assert (dst / "00" / "prompt.json").read_text() == '{"0": "Mine"}'
    assert sorted(p.relative_to(dst).as_posix() for p in done.copied) == ["00/images/ball.png", "01/images/dog.png"]
    assert sorted(p.relative_to(dst).as_posix() for p in done.skipped) == ["00/images/apple.png", "00/prompt.json"]
    assert Image.open(dst / "01" / "images" / "dog.png").getpixel((0, 0)) == (1, 2, 3)
    again = import_images(src, dst)
    assert again.copied == [] and len(again.skipped) == 4


def test_import_images_errors(tmp_path):
    with pytest.raises(DataError, match="absent"):
        import_images(tmp_path / "absent", tmp_path / "data")
    (tmp_path / "empty" / "00").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        import_images(tmp_path / "empty", tmp_path / "data")


def test_committed_sets():
    assert list_styles(ROOT / "data" / "demo") == ["dots", "ink", "stripes"]
    for style in list_styles(ROOT / "data" / "demo"):
        data = load_style(ROOT / "data" / "demo", style)
        assert len(data.images) == 3 and len(data.prompts) == 3 and data.notes == []
        assert all(i.image.size == (128, 128) for i in data.images)
    b_styles = sorted(p.name for p in (ROOT / "data" / "B").iterdir() if p.is_dir())
    assert b_styles == [f"{i:02d}" for i in range(28)]
    for style in b_styles:
        prompts = json.loads((ROOT / "data" / "B" / style / "prompt.json").read_text())
        assert len(prompts) == 25 and len(set(prompts.values())) == 25


SHARED_B = ROOT.parent / "shared" / "data" / "B"


@pytest.mark.bdata
@pytest.mark.skipif(not SHARED_B.is_dir(), reason="needs the real B set at ../shared/data/B")
def test_real_B_set_loads_and_matches_the_committed_prompts():
    assert list_styles(SHARED_B) == [f"{i:02d}" for i in range(28)]
    data = load_style(SHARED_B, "00")
    assert [i.caption for i in data.images] == ["apple", "ball", "glasses"] and data.notes == []
    for style in list_styles(SHARED_B):
        committed = (ROOT / "data" / "B" / style / "prompt.json").read_text()
        assert json.loads(committed) == json.loads((SHARED_B / style / "prompt.json").read_text())
