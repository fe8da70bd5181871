"""The method's claim as a table: each ablation (one branch alone, one exchange direction, the full blend) and each
parameter variant generates every prompt of the trained styles, and :func:`styleblend.evaluate.evaluate_set`
scores them. On the toy style set the scores include content (object, colour) and style (judged style, texture),
so "the blend keeps the coarse branch's content and the fine branch's texture" can be read off the rows.

Images go to ``<out>/<variant>/<style>/<Prompt>.png``, one folder per variant, kept between runs (a rerun scores
what is there and generates only what is missing).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Sequence

from .blend import generate_style
from .config import BlendParams, style_blend_params
from .evaluate import StyleScore, evaluate_set
from .lessons import ABLATIONS
from .run_context import SetRun
from .toyworld import is_toy_set
from .validate import validate_styles

TABLE_TERMS = ("object", "colour", "judged_style", "texture", "hist")


@dataclass(frozen=True)
class Variant:
    """One row: a sampling mode (:data:`styleblend.blend.MODES`) and changes to each style's blend settings."""
    name: str
    mode: str = "full"
    changes: tuple = ()  # ((field of BlendParams, value), ...)

    def params(self, base: BlendParams) -> BlendParams:
        return replace(base, **dict(self.changes))


MODE_VARIANTS = tuple(Variant(name, mode) for mode, name in ABLATIONS.items())
PARAMETER_VARIANTS = (
    Variant("full, c2f_ratio 0.4", changes=(("c2f_ratio", 0.4),)),
    Variant("full, lora_scale 1.0", changes=(("lora_scale", 1.0),)),
    Variant("full, no c2f layers", changes=(("c2f_layers", ()),)),
)


def run_ablation(run: SetRun, styles: Sequence[str], out, variants: Sequence[Variant] = MODE_VARIANTS,
                 seed=None) -> Dict[str, StyleScore]:
    """Generate and score every variant for the trained ``styles`` of ``run``; ``{variant name: mean row}``."""
    inputs = validate_styles(run.paths.data_root, styles, run.recipe, run.paths.set_name, run.sd.tokenizer)
    rows = {}
    for variant in variants:
        folder = _folder(variant)
        for style, data in inputs.styles.items():
            base, _ = style_blend_params(run.recipe, run.paths.set_name, style)
            generate_style(run.sd, data, run.paths.checkpoint(style), variant.params(base), run.recipe.blend, out,
                           folder, seed=seed, mode=variant.mode)
        rows[variant.name] = evaluate_set(folder, out, run.paths.data_root, styles)[-1]
    return rows


def _folder(variant: Variant) -> str:
    return "".join(c if c.isalnum() else "_" for c in variant.name).strip("_")


def ablation_table(rows: Dict[str, StyleScore], terms: Sequence[str] = TABLE_TERMS) -> str:
    """A Markdown table: one row per variant, the mean over styles of each term that was computed."""
    shown = [t for t in terms if any(getattr(s, t) is not None for s in rows.values())]
    lines = ["| variant | " + " | ".join(shown) + " |", "|---|" + "---:|" * len(shown)]
    for name, score in rows.items():
        cells = ["—" if getattr(score, t) is None else f"{getattr(score, t):.3f}" for t in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def style_ablation(run) -> str:
    """Notebook 06's ablation of its one style (a :class:`styleblend.run_context.NotebookRun`), as a Markdown table,
    where it is cheap: the toy set or smoke sizes. On a real model it would generate five times notebook 05's
    images, so it says how to run it instead."""
    if not (run.smoke or is_toy_set(run.paths.data_root)):
        return (f"Not run here: on a real model the ablation generates five times notebook 05's images. "
                f"`styleblend ablation --set {run.paths.set_name} --data {run.paths.data_root} --styles {run.style} "
                f"--model {run.model}` runs it and writes the table to `outputs/ablation/ablation.md`.")
    return ablation_table(run_ablation(run, [run.style], run.output_root / "ablation"))
