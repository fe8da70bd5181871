"""The notebooks' figures: image grids, loss curves, trajectories, contact sheets, the injection map."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def image_grid(images: Sequence[Image.Image], titles: Optional[Sequence[str]] = None, ncols: Optional[int] = None,
               size: float = 2.4, suptitle: str = ""):
    """Images side by side (``ncols`` per row), each with an optional title."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = ncols or n
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def loss_curves(curves: Dict[str, Sequence[float]], smooth: int = 10):
    """Training losses (raw, faint) with a moving average per curve."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3), squeeze=False)
    for ax, (name, values) in zip(axes.flat, curves.items()):
        values = np.asarray(values, dtype=float)
        ax.plot(values, alpha=0.3, label="loss")
        if len(values) >= smooth > 1:
            ax.plot(np.arange(smooth - 1, len(values)), np.convolve(values, np.ones(smooth) / smooth, "valid"),
                    label=f"mean of {smooth}")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def injection_map(c2f_layers: Sequence[int], f2c_layers: Sequence[int], c2f_ratio: float, f2c_ratio: float,
                  steps: int, num_layers: int = 16):
    """Which self-attention layer (rows) exchanges what at which denoising step (columns)."""
    grid = np.zeros((num_layers, steps))
    q_until, kv_until = int(round(c2f_ratio * steps)), int(round(f2c_ratio * steps))
    for layer in c2f_layers:
        grid[layer, :q_until] += 1
    for layer in f2c_layers:
        grid[layer, :kv_until] += 2
    cmap = matplotlib.colors.ListedColormap(["#f2f2f2", "#4c72b0", "#dd8452", "#55a868"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=3, aspect="auto", interpolation="nearest")
    ax.set_xlabel("denoising step")
    ax.set_ylabel("self-attention layer (0–5 down, 6 mid, 7–15 up)")
    ax.set_yticks(range(num_layers))
    handles = [matplotlib.patches.Patch(color=c, label=l) for c, l in
               zip(cmap.colors[1:], ["Q: CSB → FSB", "K,V: FSB → CSB", "both"])]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path) -> Path:
    """Save a figure as PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
