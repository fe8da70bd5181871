"""LoRA: a low-rank update ``W x + m · (alpha / rank) · B A x`` added to chosen ``nn.Linear`` layers.

:func:`add_lora` swaps each chosen ``Linear`` for a :class:`LoRALinear` that *shares* the base weight and
bias variables, so the base parameter names (``...to_q.weight``) do not change and only ``lora_down`` /
``lora_up`` are new. ``B`` starts at zero, so a fresh LoRA leaves the model's function unchanged.

The multiplier ``m`` may be a float or a per-sample vector: StyleBlend runs its two branches in one batch
with different UNet-LoRA scales (coarse branch ``s``, fine branch 1.0), see :func:`lora_multiplier`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional, Union

from ...backend import jt, nn

Multiplier = Union[float, jt.Var]


class LoRALinear(nn.Module):
    """A ``Linear`` with a trainable rank-``rank`` update; the base weights are shared, not copied."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        out_features, in_features = base.weight.shape
        if rank < 1 or rank > min(in_features, out_features):
            raise ValueError(f"LoRA rank {rank} must be in 1..{min(in_features, out_features)}")
        self.weight = base.weight
        self.bias = base.bias
        self.lora_down = nn.Linear(in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, out_features, bias=False)
        self.lora_down.weight.assign(jt.randn(rank, in_features) * (1.0 / rank))
        self.lora_up.weight.assign(jt.zeros((out_features, rank)))
        self.rank = rank
        self.alpha = float(alpha)
        self.multiplier: Multiplier = 1.0

    def execute(self, x: jt.Var) -> jt.Var:
        y = nn.matmul_transpose(x, self.weight)
        if self.bias is not None:
            y = y + self.bias
        delta = self.lora_up(self.lora_down(x.cast(self.lora_down.weight.dtype))).cast(y.dtype)
        m = self.multiplier
        if isinstance(m, jt.Var):
            m = m.reshape([m.shape[0]] + [1] * (delta.ndim - 1)).cast(delta.dtype)
        return y + delta * (self.alpha / self.rank) * m


def add_lora(model: nn.Module, targets: Iterable[str], rank: int, alpha: float) -> List[str]:
    """Replace every ``nn.Linear`` attribute whose name is in ``targets`` by a :class:`LoRALinear`.

    ``targets`` are attribute names such as ``("to_q", "to_k", "to_v", "0")`` (``"0"`` reaches ``to_out.0``
    inside a ``ModuleList`` only when listed as ``"to_out.0"``). Returns the dotted names that were wrapped.
    """
    targets = list(targets)
    wrapped = []
    for name, module in list(model.named_modules()):
        for target in targets:
            parent, _, attr = target.rpartition(".")
            owner = getattr(module, parent, None) if parent else module
            child = getattr(owner, attr, None) if owner is not None else None
            if isinstance(child, nn.Linear) and not isinstance(child, LoRALinear):
                lora = LoRALinear(child, rank, alpha)
                if isinstance(owner, nn.Sequential):  # jittor's ModuleList
                    owner.layers[attr] = lora
                else:
                    setattr(owner, attr, lora)
                wrapped.append(f"{name}.{target}" if name else target)
    if not wrapped:
        raise ValueError(f"add_lora found no Linear layer named any of {targets}")
    return wrapped


def remove_lora(model: nn.Module) -> None:
    """Put a plain ``nn.Linear`` (sharing the base weight and bias) back in place of every LoRA layer."""
    for name, layer in lora_layers(model).items():
        parent_name, _, attr = name.rpartition(".")
        owner = model
        for part in parent_name.split(".") if parent_name else []:
            owner = owner.layers[part] if isinstance(owner, nn.Sequential) else getattr(owner, part)
        out_features, in_features = layer.weight.shape
        base = nn.Linear(in_features, out_features, bias=layer.bias is not None)
        base.weight, base.bias = layer.weight, layer.bias
        if isinstance(owner, nn.Sequential):
            owner.layers[attr] = base
        else:
            setattr(owner, attr, base)


def lora_layers(model: nn.Module) -> Dict[str, LoRALinear]:
    """All LoRA layers of ``model`` by dotted name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> List[jt.Var]:
    """The trainable LoRA variables (down and up matrices) of ``model``."""
    params = []
    for layer in lora_layers(model).values():
        params += [layer.lora_down.weight, layer.lora_up.weight]
    return params


def lora_state_dict(model: nn.Module) -> Dict[str, jt.Var]:
    """``{name.lora_down.weight: ..., name.lora_up.weight: ...}`` for saving."""
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{name}.lora_down.weight"] = layer.lora_down.weight
        state[f"{name}.lora_up.weight"] = layer.lora_up.weight
    return state


def load_lora_state_dict(model: nn.Module, state: Dict[str, "object"]) -> None:
    """Copy saved LoRA matrices into ``model``'s LoRA layers; names and shapes must match exactly."""
    own = lora_state_dict(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"LoRA weights do not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, var in own.items():
        value = jt.array(state[key]) if not isinstance(state[key], jt.Var) else state[key]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"LoRA weight {key} has shape {tuple(value.shape)}, model expects {tuple(var.shape)}")
        var.assign(value.cast(var.dtype))


@contextmanager
def lora_multiplier(model: nn.Module, multiplier: Multiplier, names: Optional[Iterable[str]] = None):
    """For a ``with`` block, ``model``'s LoRA layers — those whose last name is in ``names``, or all — run at
    ``multiplier`` (a float, or a per-sample vector of the batch size); their old multipliers come back after."""
    layers = [layer for name, layer in lora_layers(model).items() if names is None or name.rsplit(".", 1)[-1] in names]
    before = [layer.multiplier for layer in layers]
    try:
        for layer in layers:
            layer.multiplier = multiplier
        yield
    finally:
        for layer, old in zip(layers, before):
            layer.multiplier = old
