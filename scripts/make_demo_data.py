"""Draw the demo style set: 3 styles x 3 reference images (128x128) and 3 prompts each, deterministically.

    python scripts/make_demo_data.py [--out data/demo] [--force]

Each image shows a simple subject (its file name is the caption) rendered in the style's look: bold
stripes, halftone dots, or ink strokes on paper. The set is tiny on purpose: tests and notebooks run the
whole StyleBlend chain on it with the tiny model in seconds.
"""
from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import styleblend  # noqa: F401  (project import order)
from styleblend.errors import StyleBlendError
from styleblend.io import save_image, write_atomic

SIZE = 128
STYLES = {
    "stripes": {"images": ["red_apple", "blue_house", "green_tree"], "prompts": ["Cat", "Bicycle", "Lighthouse"]},
    "dots": {"images": ["yellow_sun", "orange_fish", "pink_flower"], "prompts": ["Owl", "Car", "Castle"]},
    "ink": {"images": ["boat", "mountain", "cup"], "prompts": ["Horse", "Bridge", "Teapot"]},
}
COLOURS = {"red": (200, 40, 40), "blue": (40, 80, 200), "green": (40, 150, 60), "yellow": (240, 200, 30),
           "orange": (240, 130, 30), "pink": (230, 110, 170)}


def draw_subject(name: str) -> np.ndarray:
    """A boolean mask of the subject named by the caption's last word."""
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    if name == "apple":
        d.ellipse((30, 40, 98, 108), fill=255)
        d.rectangle((62, 22, 66, 44), fill=255)
        d.ellipse((68, 24, 90, 36), fill=255)
    elif name == "house":
        d.rectangle((32, 60, 96, 108), fill=255)
        d.polygon([(24, 62), (64, 24), (104, 62)], fill=255)
        d.rectangle((56, 80, 72, 108), fill=0)
    elif name == "tree":
        d.rectangle((58, 76, 70, 114), fill=255)
        d.ellipse((28, 16, 100, 88), fill=255)
    elif name == "sun":
        for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
            d.line((64, 64, 64 + 56 * np.cos(angle), 64 + 56 * np.sin(angle)), fill=255, width=5)
        d.ellipse((34, 34, 94, 94), fill=255)
    elif name == "fish":
        d.ellipse((20, 40, 92, 88), fill=255)
        d.polygon([(84, 64), (112, 38), (112, 90)], fill=255)
        d.ellipse((34, 54, 42, 62), fill=0)
    elif name == "flower":
        d.line((64, 64, 64, 120), fill=255, width=5)
        for angle in np.linspace(0, 2 * np.pi, 5, endpoint=False):
            x, y = 64 + 22 * np.cos(angle), 52 + 22 * np.sin(angle)
            d.ellipse((x - 16, y - 16, x + 16, y + 16), fill=255)
    elif name == "boat":
        d.polygon([(16, 84), (112, 84), (96, 106), (32, 106)], fill=255)
        d.line((64, 20, 64, 84), fill=255, width=4)
        d.polygon([(68, 24), (68, 78), (104, 78)], fill=255)
    elif name == "mountain":
        d.polygon([(8, 110), (50, 30), (92, 110)], fill=255)
        d.polygon([(50, 110), (88, 50), (124, 110)], fill=255)
    elif name == "cup":
        d.rectangle((32, 40, 84, 104), fill=255)
        d.ellipse((72, 54, 108, 90), outline=255, width=7)
    else:
        raise ValueError(f"no drawing for {name!r}")
    return np.asarray(img) > 127


def edge(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` pixels of its border."""
    inner = mask.copy()
    for _ in range(width):
        inner[1:-1, 1:-1] &= inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
        inner[[0, -1], :] = inner[:, [0, -1]] = False
    return mask & ~inner


def render_stripes(mask, colour, rng) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    out = np.where(((x + y) // 8 % 2 == 0)[..., None], (250, 236, 214), (236, 220, 196)).astype(float)
    dark = np.array(colour) * 0.55
    out[mask] = np.where(((x - y) // 6 % 2 == 0)[mask][:, None], colour, dark)
    out[edge(mask, 3)] = (20, 20, 20)
    return out


def render_dots(mask, colour, rng) -> np.ndarray:
    out = np.full((SIZE, SIZE, 3), (252, 246, 228), float)
    y, x = np.mgrid[:SIZE, :SIZE]
    cell, half = 8, 4
    cy, cx = (y // cell) * cell + half, (x // cell) * cell + half
    dist = np.hypot(y - cy, x - cx)
    inside = mask[cy.clip(0, SIZE - 1), cx.clip(0, SIZE - 1)]
    jitter = rng.uniform(0, 0.5, (SIZE // cell, SIZE // cell)).repeat(cell, 0).repeat(cell, 1)
    radius = np.where(inside, 1.5 + 1.5 * (1 - cy / SIZE) + jitter, 1.0)  # bigger dots towards the top
    dot = dist <= radius
    out[dot & inside] = colour
    out[dot & ~inside] = (225, 215, 200)
    return out


def render_ink(mask, colour, rng) -> np.ndarray:
    paper = 238 + rng.normal(0, 4, (SIZE, SIZE))
    wash = np.where(mask, 200 + rng.normal(0, 10, (SIZE, SIZE)), 0)
    tone = np.where(mask, wash, paper)
    strokes = edge(mask, 2) & (rng.random((SIZE, SIZE)) < 0.9)
    tone[strokes] = 30 + rng.normal(0, 12, strokes.sum())
    return np.stack([tone * 0.95, tone * 0.97, tone], axis=-1)  # blue-black ink


RENDERERS = {"stripes": render_stripes, "dots": render_dots, "ink": render_ink}


def make_image(style: str, caption: str) -> Image.Image:
    """The demo image of ``caption`` (file stem) in ``style``; the same bytes on every run."""
    words = caption.split("_")
    colour = COLOURS.get(words[0], (40, 40, 40))
    rng = np.random.default_rng(zlib.crc32(f"{style}/{caption}".encode()))
    pixels = RENDERERS[style](draw_subject(words[-1]), colour, rng)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "demo"))
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    for style, spec in STYLES.items():
        folder = Path(args.out) / style
        for caption in spec["images"]:
            save_image(make_image(style, caption), folder / "images" / f"{caption}.png", overwrite=args.force)
        prompts = json.dumps({str(i): p for i, p in enumerate(spec["prompts"])}, indent=4) + "\n"
        write_atomic(folder / "prompt.json", lambda tmp: tmp.write_text(prompts), overwrite=args.force)
        print(f"{folder}: {len(spec['images'])} images, {len(spec['prompts'])} prompts")


if __name__ == "__main__":
    try:
        main()
    except StyleBlendError as exc:
        raise SystemExit(f"error: {exc}")
