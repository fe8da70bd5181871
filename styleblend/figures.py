"""The notebooks' figures: image grids and tables, loss curves, the noise schedule, contact sheets, the injection
map, score bars; `show` saves a figure as PNG and displays it once in a notebook."""
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
                             squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def loss_curves(curves: Dict[str, Sequence[float]], smooth: int = 10, log_scale: bool = False):
    """Training losses (raw, faint) with a moving average per curve; ``log_scale`` for losses that fall by
    orders of magnitude (a VAE's)."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3), squeeze=False)
    for ax, (name, values) in zip(axes.flat, curves.items()):
        values = np.asarray(values, dtype=float)
        ax.plot(values, alpha=0.3, label="loss")
        if len(values) >= smooth > 1:
            ax.plot(np.arange(smooth - 1, len(values)), np.convolve(values, np.ones(smooth) / smooth, "valid"),
                    label=f"mean of {smooth}")
        ax.set_title(name)
        ax.set_xlabel("step")
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def injection_map(plan, num_layers: int = 16):
    """Which self-attention layer (rows) exchanges what at which denoising step (columns), exactly as ``plan``
    (a :class:`styleblend.blend.InjectionPlan`) decides it."""
    grid = np.array([[int(plan.inject_q(layer, step)) + 2 * int(plan.inject_kv(layer, step))
                      for step in range(plan.num_steps)] for layer in range(num_layers)])
    cmap = matplotlib.colors.ListedColormap(["#f2f2f2", "#4c72b0", "#dd8452", "#55a868"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=3, aspect="auto", interpolation="nearest")
    ax.set_xlabel("denoising step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("self-attention layer (0–5 down, 6 mid, 7–15 up)")
    ax.set_yticks(range(num_layers))
    handles = [matplotlib.patches.Patch(color=c, label=l) for c, l in
               zip(cmap.colors[1:], ["Q: CSB → FSB", "K,V: FSB → CSB", "both"])]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path) -> Path:
    """Save a figure as PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def image_table(rows: Sequence[Sequence[Image.Image]], row_titles: Sequence[str] = (),
                col_titles: Sequence[str] = (), marked: Sequence[tuple] = (), size: float = 2.0, suptitle: str = ""):
    """Images in a table (``rows[r][c]``; rows may be ragged, ``None`` leaves a cell blank) with row / column
    labels; ``marked`` (r, c) cells get a green frame (e.g. the SDEdit candidates that were kept)."""
    nrows, ncols = len(rows), max((len(r) for r in rows), default=0)
    if not nrows or not ncols:
        raise ValueError("image_table needs at least one image")
    marked = set(map(tuple, marked))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + (1.2 if row_titles else 0), size * nrows + 0.4),
                             squeeze=False, layout="constrained")
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row) and row[c] is not None:
                ax.imshow(row[c])
                if (r, c) in marked:
                    for spine in ax.spines.values():
                        spine.set(visible=True, color="#2ca02c", linewidth=4)
            if r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=9)
            if c == 0 and r < len(row_titles):
                ax.set_ylabel(row_titles[r], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def contact_sheet(references: Sequence[Image.Image], generated: Sequence[Image.Image],
                  reference_titles: Sequence[str] = (), generated_titles: Sequence[str] = (), ncols: int = 5,
                  size: float = 2.0, title: str = ""):
    """A style's reference images (top row) above its generated images (``ncols`` per row)."""
    if not references or not generated:
        raise ValueError("contact_sheet needs reference and generated images")
    ncols = max(len(references), min(ncols, len(generated)))
    gen_rows = math.ceil(len(generated) / ncols)
    fig, axes = plt.subplots(1 + gen_rows, ncols, figsize=(size * ncols, size * (1 + gen_rows) + 0.4),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for slots, images, titles in ((axes[0], references, reference_titles),
                                  (axes[1:].flat, generated, generated_titles)):
        for i, (ax, img) in enumerate(zip(slots, images)):
            ax.imshow(img)
            if i < len(titles):
                ax.set_title(titles[i], fontsize=8)
    for ax, label in ((axes[0, 0], "references"), (axes[1, 0], "generated")):
        ax.text(-0.08, 0.5, label, transform=ax.transAxes, rotation=90, ha="right", va="center")
    if title:
        fig.suptitle(title)
    return fig


def noise_schedule(alphas_cumprod: Sequence[float], timesteps: Sequence[int] = ()):
    """How much signal (√ᾱ_t) and noise (√(1−ᾱ_t)) a noisy latent holds at each training timestep; the
    sampler's ``timesteps`` as dots."""
    a = np.asarray(alphas_cumprod, dtype=float)
    t = np.arange(len(a))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(t, np.sqrt(a), label="signal  √ᾱ_t")
    ax.plot(t, np.sqrt(1 - a), label="noise  √(1−ᾱ_t)")
    if len(timesteps):
        steps = np.asarray(timesteps, dtype=int)
        ax.scatter(steps, np.sqrt(a[steps]), s=12, color="k", zorder=3, label="sampler steps")
    ax.set_xlabel("timestep t")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def score_bars(scores, columns: Sequence[str], title: str = ""):
    """Grouped bars: for each score row (``.style`` and one attribute per column) its computed ``columns``;
    a column no row computed is left out, a missing value leaves a gap."""
    columns = [c for c in columns if any(getattr(s, c) is not None for s in scores)]
    if not scores or not columns:
        raise ValueError("score_bars needs at least one computed value")
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(scores) * len(columns) + 2), 3))
    for i, column in enumerate(columns):
        cells = [(j + i * width, getattr(s, column)) for j, s in enumerate(scores) if getattr(s, column) is not None]
        ax.bar([x for x, _ in cells], [v for _, v in cells], width, label=column)
    ax.set_xticks(np.arange(len(scores)) + width * (len(columns) - 1) / 2)
    ax.set_xticklabels([s.style for s in scores])
    ax.axhline(0, color="k", linewidth=0.5)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def show(fig, path) -> None:
    """Save ``fig`` as PNG at ``path`` and show it once in a notebook (then close it)."""
    from IPython import get_ipython
    from IPython.display import display

    save(fig, path)
    if get_ipython() is not None:
        display(fig)
    plt.close(fig)
