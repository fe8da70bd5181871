"""The toy world's judge: a small classifier that says which object, colour and rendering style a picture shows.

The toy world draws every picture from a known scene, so a classifier trained on fresh drawings of all seven
styles (the held-out ones included: the judge is not the generator) can check a generated image against its
prompt ("red fish") and its style set. It is a PyTorch-CPU convolutional net (the evaluation's other model terms
use PyTorch too) trained in about a minute, deterministically from :data:`JUDGE_SEED`, and cached under
``~/.cache/styleblend`` keyed by its settings. :func:`judge_accuracy` measures it on drawings it never saw: the
ceiling a generated set can reach (an ink-wash picture is grey, so its colour is often unknowable).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

from .errors import ModelLoadError
from .io import write_atomic
from .progress import progress
from .toyworld import COLOURS, OBJECTS, STYLES, draw, sample_scene

JUDGE_SEED = 0
CACHE = Path.home() / ".cache" / "styleblend"
HEADS = {"object": OBJECTS, "colour": tuple(COLOURS), "style": STYLES}


@dataclass(frozen=True)
class JudgeConfig:
    """The judge's training: ``pictures`` drawings at ``draw_size`` (the toy model's side), seen at ``size``."""
    pictures: int = 6000
    draw_size: int = 64
    size: int = 32
    steps: int = 1500
    batch: int = 128
    lr: float = 2e-3

    def key(self) -> str:
        """The cache key: these settings, the world's labels and one drawing in every style, so a judge cached
        before the world changed (a style added, a texture redrawn) is never used."""
        digest = hashlib.sha1(json.dumps([asdict(self), HEADS], sort_keys=True).encode())
        scene = sample_scene(np.random.default_rng(0))
        for style in STYLES:
            digest.update(draw(scene, style, self.draw_size).tobytes())
        return digest.hexdigest()[:12]


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ModelLoadError("the toy judge needs PyTorch (pip install -e '.[eval]')") from exc
    return torch


def as_input(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """RGB pictures of any size as the judge's input: ``size``² (box filter), [0, 1], NCHW float32."""
    pixels = [np.asarray(im.convert("RGB").resize((size, size), Image.BOX), np.float32) / 255.0 for im in images]
    return np.stack(pixels).transpose(0, 3, 1, 2)


def drawings(count: int, seed: int, size: int = 64) -> tuple:
    """``count`` random scenes in random styles: ``(images, {head: label indices})``."""
    rng = np.random.default_rng(seed)
    images, labels = [], {head: [] for head in HEADS}
    for _ in range(count):
        scene, style = sample_scene(rng), STYLES[rng.integers(len(STYLES))]
        images.append(draw(scene, style, size))
        for head, value in (("object", scene.obj), ("colour", scene.colour), ("style", style)):
            labels[head].append(HEADS[head].index(value))
    return images, {head: np.array(v) for head, v in labels.items()}


def _network(torch):
    nn = torch.nn

    class Judge(nn.Module):
        """Three convolutions, global pooling (objects may sit anywhere), one linear head per question."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())
            self.heads = nn.ModuleDict({head: nn.Linear(128, len(names)) for head, names in HEADS.items()})

        def forward(self, x):
            features = self.features(x)
            return {head: layer(features) for head, layer in self.heads.items()}

    return Judge()


def train_judge(cfg: JudgeConfig = JudgeConfig()):
    """A fresh judge trained on ``cfg.pictures`` drawings (Adam, cross-entropy summed over the three heads)."""
    torch = _torch()
    torch.manual_seed(JUDGE_SEED)
    images, labels = drawings(cfg.pictures, JUDGE_SEED, cfg.draw_size)
    x = torch.from_numpy(as_input(images, cfg.size))
    y = {head: torch.from_numpy(v) for head, v in labels.items()}
    net = _network(torch)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(JUDGE_SEED)
    for _ in progress(range(cfg.steps), desc="toy judge"):
        pick = torch.from_numpy(rng.integers(len(images), size=cfg.batch))
        out = net(x[pick])
        loss = sum(torch.nn.functional.cross_entropy(out[h], y[h][pick]) for h in HEADS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def load_judge(cfg: JudgeConfig = JudgeConfig(), cache: Path = CACHE):
    """The judge of ``cfg``: from the cache, else trained now and cached."""
    torch = _torch()
    path = Path(cache) / f"toy-judge-{cfg.key()}.pt"
    if path.is_file():
        net = _network(torch)
        net.load_state_dict(torch.load(path, map_location="cpu"))
        return net.eval()
    net = train_judge(cfg)
    write_atomic(path, lambda tmp: torch.save(net.state_dict(), tmp))
    return net


def judge(net, images: Sequence[Image.Image], size: int = JudgeConfig.size) -> Dict[str, List[str]]:
    """What the judge sees in each picture: ``{"object": [...], "colour": [...], "style": [...]}``."""
    torch = _torch()
    with torch.no_grad():
        out = net(torch.from_numpy(as_input(images, size)))
    return {head: [HEADS[head][i] for i in out[head].argmax(1).tolist()] for head in HEADS}


def judge_accuracy(net, count: int = 700, seed: int = JUDGE_SEED + 1, cfg: JudgeConfig = JudgeConfig()
                   ) -> Dict[str, Dict[str, float]]:
    """The judge's accuracy per style and head on ``count`` drawings it was not trained on."""
    images, labels = drawings(count, seed, cfg.draw_size)
    seen = judge(net, images, cfg.size)
    styles = labels["style"]
    return {style: {head: float(np.mean([HEADS[head].index(v) == t for v, t, s in
                                         zip(seen[head], labels[head], styles) if s == k]))
                    for head in HEADS}
            for k, style in enumerate(STYLES)}
