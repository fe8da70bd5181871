"""One style's trained files: where they live, how they are written (atomic, never replaced unless forced).

A checkpoint folder ``<root>/<set_name>/<style>/`` holds

* ``coarse_embeds.safetensors`` — the ``<C>`` embedding row (one array named after the token),
* ``text_encoder_lora.safetensors`` — the coarse text-encoder LoRA (``lora_state_dict`` names),
* ``fine_embeds.safetensors`` — the ``<F>`` embedding row,
* ``unet_lora.safetensors`` — the fine UNet LoRA,
* ``config.yaml`` — the recipe sections that produced them, and ``sdedit/`` — the SDEdit training images.

LoRA files carry ``rank``, ``alpha`` and ``targets`` in their metadata, embedding files ``token`` and
``init_token``, so loading needs nothing else; every file also names its ``set`` and ``style``, so another
style's file copied here is refused. ``manifest.json`` (:mod:`styleblend.manifest`) records what made them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from . import io
from .errors import ModelLoadError, StyleBlendError
from .sd.models.lora import add_lora, load_lora_state_dict, lora_layers, lora_state_dict, remove_lora

FILES = {
    "coarse_embeds": "coarse_embeds.safetensors",
    "text_encoder_lora": "text_encoder_lora.safetensors",
    "fine_embeds": "fine_embeds.safetensors",
    "unet_lora": "unet_lora.safetensors",
    "config": "config.yaml",
}
# the files each training stage of the chain writes; the stage is done when all of them exist
STAGE_FILES = {"coarse": ("coarse_embeds", "text_encoder_lora"), "fine": ("fine_embeds", "unet_lora")}


class StyleCheckpoint:
    """The checkpoint folder of one style of one style set (e.g. set ``B``, style ``00``)."""

    def __init__(self, root, set_name: str, style: str):
        self.root, self.set_name, self.style = Path(root), str(set_name), str(style)
        self.folder = self.root / self.set_name / self.style

    def __repr__(self) -> str:
        return f"StyleCheckpoint({str(self.folder)!r})"

    def path(self, kind: str) -> Path:
        """The file of ``kind`` (a key of ``FILES``)."""
        if kind not in FILES:
            raise StyleBlendError(f"unknown checkpoint file kind {kind!r} (one of {sorted(FILES)})")
        return self.folder / FILES[kind]

    coarse_embeds = property(lambda self: self.path("coarse_embeds"))
    text_encoder_lora = property(lambda self: self.path("text_encoder_lora"))
    fine_embeds = property(lambda self: self.path("fine_embeds"))
    unet_lora = property(lambda self: self.path("unet_lora"))
    config = property(lambda self: self.path("config"))
    sdedit_dir = property(lambda self: self.folder / "sdedit")

    def exists(self, kind: str) -> bool:
        """True when the file of ``kind`` exists, or for ``"coarse"`` / ``"fine"`` when both its files do."""
        kinds = STAGE_FILES.get(kind, (kind,))
        return all(self.path(k).is_file() for k in kinds)

    def is_complete(self) -> bool:
        """True when all four weight files exist (what generation needs)."""
        return self.exists("coarse") and self.exists("fine")

    def check_writable(self, kinds: Iterable[str], force: bool) -> None:
        """Raise before any work starts if an output of ``kinds`` exists and ``force`` is off."""
        if force:
            return
        for kind in kinds:
            if self.path(kind).exists():
                raise StyleBlendError(f"{self.path(kind)} already exists; not replacing it (use --force / force=True)")

    def save_tensors(self, kind: str, tensors: Mapping[str, np.ndarray], metadata: Optional[Dict[str, str]] = None,
                     force: bool = False) -> Path:
        """Write ``tensors`` (numpy) as the ``kind`` file, atomically, with this folder's set and style in its
        metadata; refuses an existing file unless ``force``."""
        identity = {"set": self.set_name, "style": self.style}
        return io.save_safetensors(self.path(kind), tensors, {**(metadata or {}), **identity}, overwrite=force)

    def load_tensors(self, kind: str):
        """``(arrays, metadata)`` of the ``kind`` file; a missing file, or one saved for another style or set,
        raises :class:`ModelLoadError`."""
        path = self.path(kind)
        metadata = io.load_safetensors_metadata(path)
        made_for = (metadata.get("set", self.set_name), metadata.get("style", self.style))
        if made_for != (self.set_name, self.style):
            raise ModelLoadError(f"{path}: saved for style {made_for[1]} of set {made_for[0]}, not style "
                                 f"{self.style} of set {self.set_name}; it belongs to another style's folder")
        return io.load_safetensors(path), metadata

    def save_embedding(self, kind: str, token: str, init_token: str, row: np.ndarray, force: bool = False) -> Path:
        """Save one learned token row ``{token: row}`` as ``kind`` (``coarse_embeds`` / ``fine_embeds``)."""
        return self.save_tensors(kind, {token: np.asarray(row, dtype=np.float32)},
                                 {"token": token, "init_token": init_token}, force)

    def load_embedding(self, kind: str) -> Tuple[str, np.ndarray]:
        """``(token, row)`` saved by :meth:`save_embedding`."""
        arrays, _ = self.load_tensors(kind)
        if len(arrays) != 1:
            raise ModelLoadError(f"{self.path(kind)}: expected one token embedding, found {sorted(arrays)}")
        (token, row), = arrays.items()
        return token, row

    def save_lora(self, kind: str, model, targets: List[str], force: bool = False) -> Path:
        """Save ``model``'s LoRA matrices as ``kind``, with rank, alpha and targets in the metadata."""
        layers = list(lora_layers(model).values())
        if not layers:
            raise StyleBlendError(f"{self.path(kind)}: the model has no LoRA layers to save")
        arrays = {name: var.numpy() for name, var in lora_state_dict(model).items()}
        metadata = {"rank": str(layers[0].rank), "alpha": repr(layers[0].alpha), "targets": json.dumps(list(targets))}
        return self.save_tensors(kind, arrays, metadata, force)

    def load_lora(self, kind: str, model) -> None:
        """Load the ``kind`` LoRA into ``model``, adding LoRA layers first if it has none, or has them at another
        rank or on other layers (else reusing them)."""
        path = self.path(kind)
        arrays, metadata = self.load_tensors(kind)
        try:
            rank, alpha, targets = int(metadata["rank"]), float(metadata["alpha"]), json.loads(metadata["targets"])
        except (KeyError, ValueError) as exc:
            raise ModelLoadError(f"{path}: LoRA metadata (rank, alpha, targets) missing or unreadable ({exc})") from exc
        layers = lora_layers(model)
        saved = {name.rsplit(".", 2)[0] for name in arrays}  # "<layer>.lora_down.weight" -> "<layer>"
        if layers and (set(layers) != saved or any(layer.rank != rank for layer in layers.values())):
            remove_lora(model)  # another style's LoRA of another rank or on other layers: this one replaces it
        if not lora_layers(model):
            add_lora(model, targets, rank, alpha)
        try:
            load_lora_state_dict(model, arrays)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {exc}") from exc
        for layer in lora_layers(model).values():
            layer.alpha = alpha

    def save_config_section(self, section: str, values: dict, seed: int) -> Path:
        """Record a stage's settings in ``config.yaml`` as a partial recipe (``seed`` and ``section``).

        Called after that stage's weights were written, so it replaces its own section and keeps the others;
        :func:`styleblend.config.load_recipe` reads the file back.
        """
        data = dict(io.load_yaml(self.config) or {}) if self.config.is_file() else {}
        data["seed"] = seed
        data[section] = values
        return io.save_yaml(self.config, data, overwrite=True)
