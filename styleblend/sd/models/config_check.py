"""Validate diffusers / transformers ``config.json`` dictionaries against what a model class implements."""
from __future__ import annotations

from typing import Any, Dict, Mapping

from ...errors import ConfigError

# Values that an unknown key may hold without changing the architecture.
NEUTRAL_VALUES = (None, False, 0, "", [], {})


def resolve_config(config: Mapping[str, Any], defaults: Mapping[str, Any],
                   fixed: Mapping[str, Any] = None, owner: str = "model") -> Dict[str, Any]:
    """Merge ``config`` over ``defaults``; reject what this implementation cannot build.

    * keys starting with ``_`` (``_class_name``, ``_diffusers_version``) are metadata and dropped;
    * ``fixed`` keys must hold the one value implemented (e.g. ``resnet_time_scale_shift: "default"``);
    * an unknown key is accepted only with a neutral value (``None``/``False``/0/empty), since any other
      value would mean an architecture feature this implementation does not have.
    """
    fixed = dict(fixed or {})
    out = dict(defaults)
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key in fixed:
            allowed = fixed[key] if isinstance(fixed[key], tuple) else (fixed[key],)
            if value not in allowed:
                raise ConfigError(f"{owner}: config key '{key}' = {value!r} is not supported (only {allowed!r})")
            out[key] = value
        elif key in defaults:
            out[key] = value
        elif value not in NEUTRAL_VALUES:
            raise ConfigError(f"{owner}: unknown config key '{key}' = {value!r} would change the architecture")
    return out
