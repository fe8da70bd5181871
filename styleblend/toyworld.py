"""A procedural world of captioned pictures for the toy model: objects × colours × places × backgrounds, drawn in
rendering styles, deterministic from a seed and needing no download.

A scene is one object of one colour on a plain background ("red fish on a blue background"); a **rendering
style** decides how it is painted (flat fill, outlines, stripes, dots, cross-hatching, pixels, ink wash). The
styles of :data:`PRETRAIN_STYLES` make the pretraining data; those of :data:`HELD_OUT_STYLES` never appear there:
they form the toy style set (:func:`write_style_set`, laid out like the challenge's B set), so learning one of them
is a real few-shot task. Because every picture comes from a known scene, quality can be measured against it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .config import format_prompt
from .data import result_name
from .errors import ConfigError
from .io import save_image, write_atomic

Colour = Tuple[int, int, int]
COLOURS: Dict[str, Colour] = {
    "red": (214, 39, 40), "orange": (255, 127, 14), "yellow": (240, 200, 30), "green": (44, 160, 44),
    "blue": (31, 119, 180), "purple": (148, 103, 189), "pink": (240, 120, 180), "black": (30, 30, 30),
    "white": (245, 245, 245), "grey": (140, 140, 140),
}
OBJECTS = ("circle", "square", "triangle", "star", "house", "tree", "fish", "cup", "sun", "boat")
# Pretraining has textures of its own (axis-aligned bands and grids, checks, random speckles), so the VAE and the
# denoiser learn to draw texture at all; the held-out styles' diagonals, dot grids, hatching and wash stay unseen.
# At 64² the held-out textures repeat every 8 pixels or more (the pretraining ones every 7 or 8), so each stays
# visible and spans about two cells of the toy VAE's 16² latents.
PRETRAIN_STYLES = ("flat", "outline", "pixel", "bands", "grid", "checker", "speckle")
HELD_OUT_STYLES = ("stripes", "dots", "hatch", "wash")
STYLES = PRETRAIN_STYLES + HELD_OUT_STYLES
MARKER = "toyworld.json"  # in a style set's root: its styles are the toy world's (evaluate adds the toy terms)
# The pretraining texts: the style named as a word or in the method's own phrasing, so that "in the style of <F>"
# reads like the captions the model learned from; a few name no style. Each with its probability.
PRETRAIN_TEXTS = {"A {caption}, {style}.": 0.45, "A {caption} in the style of {style}.": 0.45, "A {caption}.": 0.1}
# Where objects may be: ANYWHERE they fit, or within a smaller ``spread`` of the centre. The nearer they stay to it,
# the more of the picture a caption's object word predicts (object_share; docs/toy-model.md).
ANYWHERE = 0.5


@dataclass(frozen=True)
class Scene:
    """One object (name, colour) centred at (``x``, ``y``) with half-size ``r``, as fractions of the side."""
    obj: str
    colour: str
    background: str
    x: float
    y: float
    r: float

    @property
    def subject(self) -> str:
        """``"red fish"``: what the style set's prompts name."""
        return f"{self.colour} {self.obj}"

    @property
    def caption(self) -> str:
        """``"red fish on a blue background"``: a noun phrase, as the challenge's captions ("apple")."""
        return f"{self.subject} on a {self.background} background"


def check_spread(spread: float) -> None:
    """A :class:`ConfigError` naming ``spread`` unless objects can be placed with it."""
    if not 0.0 <= spread <= ANYWHERE:
        raise ConfigError(f"spread must be between 0 and {ANYWHERE} (a fraction of the picture's side), not {spread!r}")


def sample_scene(rng: np.random.Generator, obj: str = "", colour: str = "", spread: float = ANYWHERE) -> Scene:
    """A random scene (``obj`` / ``colour`` fixed when given); the background is another colour. The object's
    centre is at most ``spread`` (a fraction of the side) from the picture's centre, and never so near an edge
    that the object is cut."""
    check_spread(spread)
    obj = obj or OBJECTS[rng.integers(len(OBJECTS))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    backgrounds = [c for c in COLOURS if c != colour]
    background = backgrounds[rng.integers(len(backgrounds))]
    r = float(rng.uniform(0.22, 0.34))
    low, high = max(r + 0.04, 0.5 - spread), min(1 - r - 0.04, 0.5 + spread)
    x, y = (float(rng.uniform(low, high)) for _ in range(2))
    return Scene(obj, colour, background, x, y, r)


def outline(scene: Scene, size: int) -> List[List[Tuple[float, float]]]:
    """The object as polygons in pixels (the first is its main body)."""
    cx, cy, r = scene.x * size, scene.y * size, scene.r * size

    def at(points):
        return [(cx + px * r, cy + py * r) for px, py in points]

    def ring(n, start=0.0, radii=(1.0,)):
        return [(np.cos(start + 2 * np.pi * k / n) * radii[k % len(radii)],
                 np.sin(start + 2 * np.pi * k / n) * radii[k % len(radii)]) for k in range(n)]

    shapes = {
        "circle": [ring(40)],
        "square": [[(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]],
        "triangle": [[(0, -0.95), (0.95, 0.8), (-0.95, 0.8)]],
        "star": [ring(10, -np.pi / 2, (1.0, 0.42))],
        "house": [[(-0.75, -0.05), (0, -0.95), (0.75, -0.05), (0.75, 0.9), (-0.75, 0.9)]],
        "tree": [[(0, -1.0), (0.75, 0.35), (-0.75, 0.35)], [(-0.18, 0.35), (0.18, 0.35), (0.18, 1.0), (-0.18, 1.0)]],
        "fish": [[(-0.9, 0), (-0.45, -0.45), (0.2, -0.5), (0.6, -0.2), (0.6, 0.2), (0.2, 0.5), (-0.45, 0.45)],
                 [(0.5, 0), (1.0, -0.5), (1.0, 0.5)]],
        "cup": [[(-0.7, -0.7), (0.5, -0.7), (0.4, 0.8), (-0.6, 0.8)], [(0.45, -0.35), (0.9, -0.35), (0.9, 0.3),
                                                                          (0.42, 0.3)]],
        "sun": [ring(16, 0, (1.0, 0.7))],
        "boat": [[(-1.0, 0.2), (1.0, 0.2), (0.6, 0.8), (-0.6, 0.8)], [(-0.05, -0.9), (0.6, 0.1), (-0.05, 0.1)]],
    }
    if scene.obj not in shapes:
        raise ConfigError(f"unknown toy object {scene.obj!r} (one of {', '.join(OBJECTS)})")
    return [at(points) for points in shapes[scene.obj]]


def mask(scene: Scene, size: int) -> Image.Image:
    """Where the object is: an ``L`` image, 255 inside."""
    out = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(out)
    for polygon in outline(scene, size):
        draw.polygon(polygon, fill=255)
    return out


def object_share(spread: float = ANYWHERE, scenes: int = 200, size: int = 32, seed: int = 0) -> float:
    """How much of the picture a caption's object word predicts: the share of the object mask's variance (per
    pixel, over scenes) that the object's name explains. It is what a denoiser can learn from the word at high
    noise, where the noisy picture shows nothing yet; the rest is the object's place and size."""
    rng = np.random.default_rng(seed)
    masks = np.stack([[np.asarray(mask(sample_scene(rng, obj=obj, spread=spread), size), np.float32) / 255.0
                       for _ in range(scenes)] for obj in OBJECTS])  # [object, scene, y, x]
    return float(masks.mean(axis=1).var(axis=0).mean() / masks.reshape(-1, size, size).var(axis=0).mean())


def _lighter(colour: Colour, amount: float = 0.55) -> Colour:
    return tuple(int(c + (255 - c) * amount) for c in colour)


def _darker(colour: Colour, amount: float = 0.45) -> Colour:
    return tuple(int(c * (1 - amount)) for c in colour)


def _pattern(size: int, draw_fn: Callable[[ImageDraw.ImageDraw], None], background: Colour) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw_fn(ImageDraw.Draw(image))
    return image


def _flat(scene, size, fg, bg, m):
    return Image.composite(Image.new("RGB", (size, size), fg), Image.new("RGB", (size, size), bg), m)


def _outline(scene, size, fg, bg, m):
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    for polygon in outline(scene, size):
        draw.line(polygon + polygon[:1], fill=fg, width=max(2, size // 24))
    return image


def _stripes(scene, size, fg, bg, m):
    step = max(8, size // 5)

    def lines(draw, colour):
        for k in range(-size, 2 * size, step):
            draw.line([(k, 0), (k + size, size)], fill=colour, width=max(1, step // 2))
    inside = _pattern(size, lambda d: lines(d, fg), _lighter(fg))
    outside = _pattern(size, lambda d: lines(d, _lighter(bg, 0.3)), bg)
    return Image.composite(inside, outside, m)


def _dots(scene, size, fg, bg, m):
    step, rad = max(8, size // 8), max(2, size // 24)

    def dots(draw, colour, offset):
        for i in range(offset, size, step):
            for j in range(offset, size, step):
                draw.ellipse([i - rad, j - rad, i + rad, j + rad], fill=colour)
    inside = _pattern(size, lambda d: dots(d, fg, step // 2), (250, 248, 240))
    outside = _pattern(size, lambda d: dots(d, _lighter(bg, 0.2), 0), _lighter(bg, 0.7))
    return Image.composite(inside, outside, m)


def _hatch(scene, size, fg, bg, m):
    step, width = max(8, size // 6), max(1, size // 32)

    def hatch(draw, colour):
        for k in range(-size, 2 * size, step):
            draw.line([(k, 0), (k + size, size)], fill=colour, width=width)
            draw.line([(k, size), (k + size, 0)], fill=colour, width=width)
    paper = (247, 242, 228)
    inside = _pattern(size, lambda d: hatch(d, fg), paper)
    outside = _pattern(size, lambda d: None, paper)
    image = Image.composite(inside, outside, m)
    ImageDraw.Draw(image).rectangle([0, 0, size - 1, size - 1], outline=_lighter(bg, 0.2), width=max(1, size // 32))
    return image


def _bands(scene, size, fg, bg, m):
    step = max(4, size // 8)

    def bands(draw, colour):
        for k in range(0, size, step):
            draw.rectangle([0, k, size, k + step // 2 - 1], fill=colour)
    inside = _pattern(size, lambda d: bands(d, fg), _lighter(fg, 0.4))
    outside = _pattern(size, lambda d: bands(d, _lighter(bg, 0.3)), bg)
    return Image.composite(inside, outside, m)


def _grid(scene, size, fg, bg, m):
    step = max(4, size // 9)

    def grid(draw, colour):
        for k in range(step // 2, size, step):
            draw.line([(k, 0), (k, size)], fill=colour, width=1)
            draw.line([(0, k), (size, k)], fill=colour, width=1)
    inside = _pattern(size, lambda d: grid(d, _darker(fg)), fg)
    outside = _pattern(size, lambda d: grid(d, _lighter(bg, 0.5)), bg)
    return Image.composite(inside, outside, m)


def _checker(scene, size, fg, bg, m):
    cell = max(2, size // 16)
    ij = np.indices((size, size)) // cell
    checks = Image.fromarray(((ij[0] + ij[1]) % 2 * 255).astype(np.uint8), "L")
    inside, outside = _flat(scene, size, fg, _lighter(fg), checks), _flat(scene, size, bg, _lighter(bg, 0.3), checks)
    return Image.composite(inside, outside, m)


def _speckle(scene, size, fg, bg, m):
    rng = np.random.default_rng(int(scene.x * 1e6) ^ int(scene.y * 1e6))  # the same scene, the same speckles
    noise = Image.fromarray(((rng.random((size, size)) < 0.25) * 255).astype(np.uint8), "L")
    inside, outside = _flat(scene, size, _darker(fg), fg, noise), _flat(scene, size, _lighter(bg, 0.35), bg, noise)
    return Image.composite(inside, outside, m)


def _pixel(scene, size, fg, bg, m):
    small = max(4, size // 8)
    return _flat(scene, size, fg, bg, m).resize((small, small), Image.BILINEAR).resize((size, size), Image.NEAREST)


def _wash(scene, size, fg, bg, m):
    grey = lambda c: (int(0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]),) * 3  # noqa: E731
    ink = _flat(scene, size, grey(fg), _lighter(grey(bg), 0.6), m)
    return ink.filter(ImageFilter.GaussianBlur(size / 40))


RENDERERS = {"flat": _flat, "outline": _outline, "stripes": _stripes, "dots": _dots, "hatch": _hatch,
             "pixel": _pixel, "wash": _wash, "bands": _bands, "grid": _grid, "checker": _checker, "speckle": _speckle}


def draw(scene: Scene, style: str, size: int = 64) -> Image.Image:
    """The scene painted in a rendering style, ``size`` × ``size`` RGB."""
    if style not in RENDERERS:
        raise ConfigError(f"unknown toy style {style!r} (one of {', '.join(STYLES)})")
    return RENDERERS[style](scene, size, COLOURS[scene.colour], COLOURS[scene.background], mask(scene, size))


def pretraining_pairs(count: int, seed: int, size: int = 64, styles: Sequence[str] = PRETRAIN_STYLES,
                      spread: float = ANYWHERE) -> List[Tuple[Image.Image, str]]:
    """``count`` (image, text) pairs in pretraining ``styles``: "A red fish on a blue background, flat.",
    "A red fish in the style of pixel.", "A red fish on a blue background." (the background is named 3 times in 4);
    objects within ``spread`` of the centre (:func:`sample_scene`)."""
    rng = np.random.default_rng(seed)
    templates, weights = list(PRETRAIN_TEXTS), list(PRETRAIN_TEXTS.values())
    pairs = []
    for _ in range(count):
        scene, style = sample_scene(rng, spread=spread), styles[rng.integers(len(styles))]
        template = templates[rng.choice(len(templates), p=weights)]
        caption = scene.caption if rng.random() < 0.75 else scene.subject
        pairs.append((draw(scene, style, size), format_prompt(template, caption=caption, style=style)))
    return pairs


def style_set_prompts(seed: int = 0) -> List[str]:
    """The style set's prompts: every object once, each in a colour of its own ("Red fish")."""
    colours = np.random.default_rng(seed).permutation(list(COLOURS))
    return [f"{colour} {obj}".capitalize() for obj, colour in zip(OBJECTS, colours)]


def write_style_set(root, styles: Sequence[str] = HELD_OUT_STYLES, references: int = 3,
                    prompts: Sequence[str] = (), seed: int = 0, size: int = 64) -> List[Path]:
    """The toy style set: ``<root>/<style>/images/<caption>.png`` (``references`` scenes of distinct objects) and
    ``<root>/<style>/prompt.json`` (``prompts``, by default :func:`style_set_prompts`: "Red fish"), like the
    challenge's B set, and :data:`MARKER` in ``root``. Existing files are kept; returns the files written."""
    bad = [s for s in styles if s not in STYLES]
    if bad:
        raise ConfigError(f"unknown toy style(s) {', '.join(bad)} (one of {', '.join(STYLES)})")
    rng = np.random.default_rng(seed)
    written = []
    marker = Path(root) / MARKER
    if not marker.exists():
        text = json.dumps({"world": "styleblend.toyworld", "seed": seed, "size": size}) + "\n"
        written.append(write_atomic(marker, lambda tmp: tmp.write_text(text, encoding="utf-8")))
    for style in styles:
        folder = Path(root) / style
        for obj in rng.choice(OBJECTS, size=references, replace=False):
            scene = sample_scene(rng, obj=str(obj))
            path = folder / "images" / result_name(scene.caption.replace(" ", "_"))
            if not path.exists():
                written.append(save_image(draw(scene, style, size), path))
        table = {str(i): p for i, p in enumerate(prompts or style_set_prompts(seed))}
        prompt_file = folder / "prompt.json"
        if not prompt_file.exists():
            text = json.dumps(table, indent=4) + "\n"
            written.append(write_atomic(prompt_file, lambda tmp: tmp.write_text(text, encoding="utf-8")))
    return written


def is_toy_set(data_root) -> bool:
    """True for a style set written by :func:`write_style_set` (it holds :data:`MARKER`)."""
    return (Path(data_root) / MARKER).is_file()


def parse_prompt(prompt: str) -> Tuple[str, str]:
    """``"Red fish"`` -> ``("red", "fish")``: what a toy prompt asks for."""
    words = prompt.lower().split()
    if len(words) != 2 or words[0] not in COLOURS or words[1] not in OBJECTS:
        raise ConfigError(f"{prompt!r} is not a toy prompt (a colour and an object, e.g. 'Red fish')")
    return words[0], words[1]
