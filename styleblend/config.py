"""Every number of the StyleBlend recipe, typed by dataclasses and valued by YAML.

The values live in ``styleblend/configs/recipe.yaml`` (the original implementation's recipe); the dataclasses
below only give names and types. :func:`load_recipe` layers, each over the last and each checked key by key:

1. ``configs/recipe.yaml`` — the full recipe;
2. ``configs/<model>/recipe.yaml`` — an embedded model's own sizes (the toy model's 64² pictures);
3. ``configs/smoke.yaml`` — tiny sizes and step counts for CI and quick checks (``smoke=True``);
4. the user's YAML file — any part of the recipe, same nesting.

Per-style StyleBlend settings (:class:`BlendParams`) live in ``configs/blend/<set>.json``, or in the user's file
that a recipe names as ``blend.params_file``: an optional ``"defaults"`` entry and one entry per style id, each
holding any of BlendParams' keys; a style's settings are the recipe's ``blend.params``, then the file's defaults,
then the style's own entry.
"""
from __future__ import annotations

import json
import math
import string
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Iterator, Mapping, get_args, get_origin, get_type_hints

from .errors import ConfigError
from .io import load_yaml, save_yaml

CONFIG_DIR = Path(__file__).parent / "configs"
PRECISIONS = ("float32", "float16")
IMAGE_FITS = ("resize", "crop")  # how reference images become square (styleblend.data.load_style)
PATH_KEYS = ("blend.params_file", "sdedit.clip_model")  # file paths, relative to the recipe file that sets them
NUM_SELF_ATTN_LAYERS = 16  # SD 2.x UNet transformer blocks, numbered down 0-5, mid 6, up 7-15

Problems = Iterator[tuple[str, str]]  # (field name, what is wrong)


@dataclass
class SDEditConfig:
    """SDEdit candidates of each reference image: the coarse style's "plausible" training data."""
    resolution: int
    prompt_template: str
    negative_prompt: str
    steps: int
    guidance: float
    strengths: list[float]
    candidates: int
    keep: int
    clip_model: str  # a CLIP ViT-L/14 folder ranking the candidates; "" = a seeded random choice

    def _problems(self) -> Problems:
        yield from _sizes(self, "resolution")
        yield from _at_least(self, 1, "steps", "candidates", "keep")
        yield from _template(self, "prompt_template", "caption")
        if not self.strengths or not all(0 < s <= 1 for s in self.strengths):
            yield "strengths", "must be a non-empty list of numbers in (0, 1]"
        if self.keep > self.candidates:
            yield "keep", f"must be at most candidates ({self.candidates})"


@dataclass
class CoarseConfig:
    """Coarse style: text-encoder LoRA (and the token ``<C>``) trained on the SDEdit candidates."""
    token: str
    init_token: str
    lora_rank: int
    lora_alpha: float
    lora_targets: list[str]
    steps: int
    batch_size: int
    resolution: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    eps: float
    prompt_template: str

    def _problems(self) -> Problems:
        yield from _tokens(self, "token", "init_token")
        yield from _at_least(self, 1, "lora_rank", "steps", "batch_size")
        yield from _positive(self, "lora_alpha", "lr", "eps")
        yield from _sizes(self, "resolution")
        yield from _optimizer(self, "betas", "weight_decay")
        yield from _template(self, "prompt_template", "caption", "token")
        if not self.lora_targets:
            yield "lora_targets", "must name at least one layer"


@dataclass
class FineConfig:
    """Fine style: textual inversion of ``<F>``, then a UNet LoRA, on the reference images."""
    token: str
    init_token: str
    resolution: int
    batch_size: int
    flip: bool
    prompt_template: str
    ti_steps: int
    ti_lr: float
    ti_betas: tuple[float, float]
    ti_decay: float
    ti_decay_every: int
    lora_rank: int
    lora_alpha: float
    lora_targets: list[str]
    lora_steps: int
    lora_lr: float
    lora_betas: tuple[float, float]
    lora_halve_every: int
    weight_decay: float
    eps: float

    def _problems(self) -> Problems:
        yield from _tokens(self, "token", "init_token")
        yield from _sizes(self, "resolution")
        yield from _at_least(self, 1, "batch_size", "ti_steps", "ti_decay_every", "lora_rank", "lora_steps",
                             "lora_halve_every")
        yield from _positive(self, "ti_lr", "lora_alpha", "lora_lr", "eps")
        yield from _optimizer(self, "ti_betas", "weight_decay")
        yield from _optimizer(self, "lora_betas", "weight_decay")
        yield from _template(self, "prompt_template", "caption", "token")
        if not 0 < self.ti_decay <= 1:
            yield "ti_decay", "must be in (0, 1]"
        if not self.lora_targets:
            yield "lora_targets", "must name at least one layer"


@dataclass
class BlendParams:
    """One style's StyleBlend settings: which self-attention layers exchange features, and for how long."""
    c2f_layers: list[int]
    f2c_layers: list[int]
    lora_scale: float
    c2f_ratio: float
    f2c_ratio: float
    seeds: dict[str, int]
    default_seed: int

    def seed_for(self, prompt: str) -> int:
        """The sampling seed of ``prompt``: its own entry in ``seeds``, else ``default_seed``."""
        return self.seeds.get(prompt, self.default_seed)

    def _problems(self) -> Problems:
        for name in ("c2f_layers", "f2c_layers"):
            if not all(0 <= i < NUM_SELF_ATTN_LAYERS for i in getattr(self, name)):
                yield name, f"must hold layer ids 0-{NUM_SELF_ATTN_LAYERS - 1}, got {getattr(self, name)}"
        for name in ("c2f_ratio", "f2c_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                yield name, f"must be in [0, 1], got {getattr(self, name)}"
        if self.lora_scale < 0:
            yield "lora_scale", f"must be >= 0, got {self.lora_scale}"
        if self.default_seed < 0 or any(s < 0 for s in self.seeds.values()):
            yield "seeds", "seeds must be >= 0"


@dataclass
class BlendConfig:
    """Two-branch sampling: coarse-style branch (CSB) and fine-style branch (FSB) in one batch."""
    steps: int
    guidance: float
    resolution: int
    output_size: int
    prompt_template: str
    fsb_negative: str
    csb_negative: str
    params_file: str  # per-style settings (configs/blend/<set>.json's format); "" = the packaged file of the set
    params: BlendParams

    def _problems(self) -> Problems:
        yield from _at_least(self, 1, "steps", "output_size")
        yield from _sizes(self, "resolution")
        yield from _template(self, "prompt_template", "prompt", "token")


@dataclass
class Recipe:
    """The whole method's settings; ``seed`` seeds training and SDEdit draws; ``precision`` is the dtype of the
    UNet's and VAE's weights (``styleblend.loading.load_sd``); ``staged_backward`` trains with gradients taken
    one UNet stage at a time (``styleblend.models.stages``); ``image_fit`` is how reference images become square
    (one of :data:`IMAGE_FITS`)."""
    seed: int
    precision: str
    staged_backward: bool
    image_fit: str
    sdedit: SDEditConfig
    coarse: CoarseConfig
    fine: FineConfig
    blend: BlendConfig

    def _problems(self) -> Problems:
        if self.seed < 0:
            yield "seed", "must be >= 0"
        if self.precision not in PRECISIONS:
            yield "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        if self.image_fit not in IMAGE_FITS:
            yield "image_fit", f"must be one of {', '.join(IMAGE_FITS)}, got {self.image_fit!r}"

    def to_dict(self) -> dict:
        """Plain nested dicts and lists, as in ``recipe.yaml``."""
        return _plain(asdict(self))


def format_prompt(template: str, **values: str) -> str:
    """Fill a recipe template as the original does: text lower-cased (tokens kept), "A" → "An" before a vowel."""
    text = template.format(**{k: v if k == "token" else v.lower() for k, v in values.items()})
    if text.startswith("A ") and text[2:3].lower() in ("a", "e", "i", "o", "u"):
        text = "An " + text[2:]
    return text


def load_recipe(path=None, smoke: bool = False, model: str = "") -> Recipe:
    """The recipe from ``recipe.yaml``, then the model's own sizes (``configs/<model>/recipe.yaml`` for an
    embedded model such as ``"toy"``), then ``smoke.yaml`` if ``smoke``, then the user's file ``path``."""
    files = [CONFIG_DIR / "recipe.yaml"]
    if model and (CONFIG_DIR / str(model) / "recipe.yaml").is_file():
        files.append(CONFIG_DIR / str(model) / "recipe.yaml")
    if smoke:
        files.append(CONFIG_DIR / "smoke.yaml")
    if path:
        files.append(Path(path))
    data, origins = {}, {}
    for file in files:
        _overlay(data, load_yaml(file) or {}, Recipe, str(file), origins)
    recipe = _build(Recipe, data, str(files[0]))
    _check(recipe, origins)
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(recipe, section), name)
        if value:
            setattr(getattr(recipe, section), name, str(Path(origins[key]).parent / Path(value).expanduser()))
    return recipe


def save_recipe(recipe: Recipe, path, overwrite: bool = False) -> Path:
    """Write ``recipe`` as YAML that :func:`load_recipe` reads back (e.g. next to a style's checkpoints)."""
    return save_yaml(path, recipe.to_dict(), overwrite=overwrite)


def style_blend_params(recipe: Recipe, set_name: str, style: str) -> tuple[BlendParams, str]:
    """``(settings, warning)`` of a style for a run of ``recipe``: from the recipe's ``blend.params_file`` when set
    (it must exist), else from the packaged ``configs/blend/<set>.json``. With no packaged file, or no entry for
    the style, the recipe's ``blend.params`` (and the file's defaults) apply and ``warning`` says so; else it
    is empty. Bad JSON or values raise :class:`ConfigError` naming the file and key."""
    given = recipe.blend.params_file
    file = Path(given) if given else CONFIG_DIR / "blend" / f"{set_name}.json"
    hint = "set blend.params_file in a recipe file (--config) to a JSON of per-style settings"
    if not file.is_file():
        if given:
            raise ConfigError(f"{file}: no such blend parameters file (the recipe's blend.params_file)")
        return recipe.blend.params, (f"set '{set_name}' has no packaged blend parameters: style {style} uses the "
                                     f"recipe's blend.params ({hint})")
    table = _blend_table(file)
    warning = "" if style in table else (f"{file} has no entry for style {style}: it uses the file's defaults over "
                                         f"the recipe's blend.params")
    return _style_params(table, style, recipe.blend.params, file), warning


def _blend_table(file: Path) -> dict:
    try:
        table = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: must hold a JSON object of style id -> parameters")
    return table


def _style_params(table: dict, style: str, base: BlendParams, file: Path) -> BlendParams:
    data = asdict(base)
    for entry in ("defaults", style):
        _overlay(data, table.get(entry, {}), BlendParams, str(file), {}, f"{entry}.")
    params = _build(BlendParams, data, str(file))
    _check(params, {}, f"{style}.", default_source=str(file))
    return params


# ---- checks shared by the dataclasses ---------------------------------------------------------------

def _at_least(obj, low: int, *names: str) -> Problems:
    yield from ((n, f"must be >= {low}") for n in names if getattr(obj, n) < low)


def _positive(obj, *names: str) -> Problems:
    yield from ((n, "must be > 0") for n in names if getattr(obj, n) <= 0)


def _sizes(obj, *names: str) -> Problems:
    yield from ((n, "must be a positive multiple of 8") for n in names if getattr(obj, n) <= 0 or getattr(obj, n) % 8)


def _tokens(obj, *names: str) -> Problems:
    yield from ((n, "must be one word") for n in names if len(getattr(obj, n).split()) != 1)


def _optimizer(obj, betas: str, weight_decay: str) -> Problems:
    if not all(0 <= b < 1 for b in getattr(obj, betas)):
        yield betas, "must be two numbers in [0, 1)"
    if getattr(obj, weight_decay) < 0:
        yield weight_decay, "must be >= 0"


def _template(obj, name: str, *placeholders: str) -> Problems:
    try:
        found = {field for _, field, _, _ in string.Formatter().parse(getattr(obj, name)) if field is not None}
    except ValueError as exc:
        found = {str(exc)}
    if found != set(placeholders):
        wanted = ", ".join("{" + p + "}" for p in placeholders)
        yield name, f"must use exactly the placeholders {wanted}, got {getattr(obj, name)!r}"


# ---- YAML / JSON dicts -> typed dataclasses -----------------------------------------------------------

def _overlay(data: dict, new, cls, source: str, origins: dict, prefix: str = "") -> None:
    """Merge ``new`` into ``data`` key by key, type-checking against ``cls``; ``origins`` records each key's file."""
    if not isinstance(new, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {new!r}")
    hints = get_type_hints(cls)
    for key, value in new.items():
        where = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"{source}: unknown key '{where}'")
        if is_dataclass(hints[key]):
            _overlay(data.setdefault(key, {}), value, hints[key], source, origins, where + ".")
        else:
            data[key] = _coerce(value, hints[key], source, where)
            origins[where] = source


def _coerce(value, tp, source: str, key: str):
    """``value`` as type ``tp`` (int, float, str, bool, list[...], tuple[...], dict[str, ...]) or ConfigError."""
    origin, args = get_origin(tp), get_args(tp)
    wrong = ConfigError(f"{source}: '{key}' must be {tp.__name__ if tp in (int, float, str, bool) else tp}, "
                        f"got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)) or (origin is tuple and len(value) != len(args)):
            raise wrong
        types = args if origin is tuple else args * len(value)
        items = [_coerce(v, t, source, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, types))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise wrong
        return {_coerce(k, args[0], source, key): _coerce(v, args[1], source, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, str):
        try:
            value = float(value)  # YAML reads "1e-4" (no dot) as a string
        except ValueError:
            raise wrong from None
    if isinstance(value, bool) != (tp is bool) or not isinstance(value, (int, float) if tp is float else tp):
        raise wrong
    if tp is float and not math.isfinite(value):  # YAML's .nan / .inf would train to NaN
        raise ConfigError(f"{source}: '{key}' must be a finite number, got {value!r}")
    return float(value) if tp is float else value


def _build(cls, data: dict, source: str, prefix: str = ""):
    kwargs = {}
    for f in fields(cls):
        tp = get_type_hints(cls)[f.name]
        if f.name not in data:
            raise ConfigError(f"{source}: missing key '{prefix}{f.name}'")
        kwargs[f.name] = _build(tp, data[f.name], source, f"{prefix}{f.name}.") if is_dataclass(tp) else data[f.name]
    return cls(**kwargs)


def _check(obj, origins: dict, prefix: str = "", default_source: str = "") -> None:
    """Raise ConfigError for the first bad value, naming the file that set it."""
    for f in fields(obj):
        if is_dataclass(getattr(obj, f.name)):
            _check(getattr(obj, f.name), origins, f"{prefix}{f.name}.", default_source)
    for name, problem in obj._problems():
        key = f"{prefix}{name}"
        raise ConfigError(f"{origins.get(key, default_source)}: '{key}' {problem}")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
