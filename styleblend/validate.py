"""Everything a run needs from its inputs, checked for every selected style at once before any training.

Training a style costs minutes to hours; a bad ``prompt.json`` of the last style, a prompt too long for a file
name or a set without blend settings must not surface after the first styles trained. :func:`validate_styles`
reads each style as the stages will (images decoded and converted, prompts, result file names, blend settings)
and raises one error listing every problem, or returns the styles it read and notes on what it converted or chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

from .config import Recipe, format_prompt, style_blend_params
from .data import MAX_NAME_BYTES, StyleData, load_style, result_name
from .errors import DataError, StyleBlendError
from .sd.sampling import MAX_TOKENS


@dataclass
class Inputs:
    """The selected styles, read as the stages read them, and notes on what was converted or chosen."""
    styles: Dict[str, StyleData]
    notes: List[str]


def validate_styles(data_root, styles: Sequence[str], recipe: Recipe, set_name: str, tokenizer=None) -> Inputs:
    """Every style read (images converted, prompts checked) with notes on its inputs (conversions, shortened file
    names, truncated prompts, default blend settings); a :class:`DataError` listing every problem when any style
    cannot be run. ``tokenizer``: count prompt tokens too (the text encoder reads at most 77)."""
    problems: List[str] = []
    notes: List[str] = []
    loaded: Dict[str, StyleData] = {}
    for style in styles:
        try:
            data = loaded[style] = load_style(data_root, style, recipe.image_fit)
            _, warning = style_blend_params(recipe, set_name, style)
        except StyleBlendError as err:
            problems.append(str(err))
            continue
        notes += [f"style {style}: {note}" for note in data.notes + ([warning] if warning else [])]
        for prompt in data.prompts.values():
            name = result_name(prompt)
            if name != f"{prompt}.png":
                notes.append(f"style {style}: prompt {prompt[:40]!r}... is longer than a file name allows "
                             f"({MAX_NAME_BYTES} bytes): its image is saved as {name!r}")
            text = format_prompt(recipe.blend.prompt_template, prompt=prompt, token=recipe.fine.token)
            if tokenizer is not None and len(tokenizer(text).input_ids) > MAX_TOKENS:
                notes.append(f"style {style}: prompt {prompt[:40]!r}... is longer than the text encoder's "
                             f"{MAX_TOKENS} tokens: the rest is cut off")
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the inputs; nothing was trained:\n  - "
                        + "\n  - ".join(problems))
    return Inputs(loaded, notes)
