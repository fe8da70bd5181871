"""From a run's parameters to everything it works with — the one setup of the notebooks, the CLI and ``reproduce``.

The parameters (a notebook's ``parameters`` cell, the command line's options) name a style set, a model and a
recipe file; :func:`open_set` turns them into the recipe, the folders and the loaded model, and :func:`open_notebook`
adds one style's data, checkpoint folder and figures folder. The rules live here, once:

* **the model**: the one given, else :data:`DEFAULT_MODEL` (an embedded model; a banner says which); an embedded
  model brings its own sizes (``configs/<model>/recipe.yaml``).
* **smoke**: the recipe's tiny sizes and step counts when asked for (``--smoke``, ``STYLEBLEND_SMOKE=1``) or on
  the tiny model (random weights: more steps would show nothing more).
* **relative paths** resolve against the repository root, wherever the process runs (JupyterLab in
  ``notebooks/``, papermill from the root or elsewhere), so outputs never land outside the repository by default.
* **the set's name** follows the data folder (``data/B`` → ``B``) unless given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .config import Recipe, load_recipe
from .data import StyleData

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "tiny"  # the model of a run that names none: an embedded one (sd.loading.resolve_model)
BANNERS = {
    "tiny": ("!! No MODEL given: running the embedded TINY model with RANDOM weights at smoke sizes.\n"
             "!! The images prove the pipeline runs; they are not from a trained Stable Diffusion."),
    "toy": ("!! No MODEL given: running the embedded TOY model (pretrained on the toy world's 64x64 pictures).\n"
            "!! The method works on toy pictures here; Stable Diffusion 2.1 is a MODEL you download."),
}


def resolve(path: Union[str, Path]) -> Path:
    """An absolute path; a relative one is taken from the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def model_name(model: Optional[str]) -> str:
    """The model a run uses: the one given, else :data:`DEFAULT_MODEL`."""
    return str(model) if model else DEFAULT_MODEL


def banner(model: Optional[str]) -> str:
    """The warning a run that names no model prints ("" when it names one)."""
    return "" if model else BANNERS[DEFAULT_MODEL]


def smoke_mode(model: Optional[str], smoke: bool = False) -> bool:
    """Tiny sizes and step counts: asked for, or on the tiny random model (it has nothing more to show)."""
    return bool(smoke) or os.environ.get("STYLEBLEND_SMOKE", "0") == "1" or model_name(model) == "tiny"


def run_recipe(model: Optional[str], recipe_file: Optional[str] = "", smoke: bool = False) -> Recipe:
    """A run's recipe: the defaults, the model's own sizes, smoke sizes by :func:`smoke_mode`, the user's file."""
    return load_recipe(recipe_file or None, smoke=smoke_mode(model, smoke), model=model_name(model))


@dataclass
class SetPaths:
    """Where a set's inputs and outputs live (the challenge's layout)."""
    set_name: str
    data_root: Path
    results_root: Path
    checkpoints_root: Path

    def checkpoint(self, style: str):
        """``<checkpoints_root>/<set_name>/<style>/``: a :class:`styleblend.checkpoints.StyleCheckpoint`."""
        from .checkpoints import StyleCheckpoint

        return StyleCheckpoint(self.checkpoints_root, self.set_name, style)


@dataclass
class SetRun:
    """A style set, its recipe and folders, and the loaded model."""
    recipe: Recipe
    paths: SetPaths
    model: str  # "" = DEFAULT_MODEL
    smoke: bool
    sd: object = None


def open_set(data_root, set_name: str = "", model: Optional[str] = "", recipe_file: Optional[str] = "",
             results_root="result", checkpoints_root="checkpoints", smoke: bool = False, steps: int = 0,
             load_model: bool = True, echo=print) -> SetRun:
    """The recipe (smoke rule, the user's file, ``steps`` > 0 for the samples), the folders and the model."""
    data_root = resolve(data_root)
    recipe = run_recipe(model, recipe_file, smoke)
    smoke = smoke_mode(model, smoke)
    if steps:
        recipe.blend.steps = steps
    paths = SetPaths(set_name or data_root.name, data_root, resolve(results_root), resolve(checkpoints_root))
    run = SetRun(recipe, paths, model or "", smoke)
    if load_model:
        from .sd.loading import load_sd, resolve_model

        run.sd = load_sd(resolve_model(model_name(model)), dtype=recipe.precision)
        if banner(model):
            echo(banner(model))
    return run


@dataclass
class NotebookRun(SetRun):
    """A notebook's run: the set's plus one style."""
    style: str = ""
    style_data: StyleData = None
    ckpt: object = None  # StyleCheckpoint
    output_root: Path = None
    figures_dir: Path = None  # <output_root>/figures/<style>


def open_notebook(style, set_name="", data_root="data/demo", model="", recipe_file="", results_root="result",
                  checkpoints_root="checkpoints", output_root="outputs", steps=0, echo=print) -> NotebookRun:
    """Every notebook's setup: its parameters in, everything its cells use out (and one line about the style,
    then notes on its inputs: :func:`styleblend.validate.validate_styles`)."""
    from .lessons import style_id

    from .validate import validate_styles

    run = open_set(data_root, set_name, model, recipe_file, results_root, checkpoints_root, steps=steps, echo=echo)
    style = style_id(run.paths.data_root, style)  # papermill's "-p style 05" arrives as the number 5
    inputs = validate_styles(run.paths.data_root, [style], run.recipe, run.paths.set_name, run.sd.tokenizer)
    style_data = inputs.styles[style]
    echo(f"style {style} of set {run.paths.set_name}: {len(style_data.images)} reference images, "
         f"{len(style_data.prompts)} prompts" + "".join(f"\nnote: {note}" for note in inputs.notes))
    output_root = resolve(output_root)
    return NotebookRun(run.recipe, run.paths, run.model, run.smoke, run.sd, style, style_data,
                       run.paths.checkpoint(style), output_root, output_root / "figures" / style)
