"""The Stable Diffusion 2.x UNet: diffusers' ``UNet2DConditionModel`` with its config keys and parameter names.

``conv_in`` → down blocks (ResNets, spatial transformers, stride-2 convolutions) → mid block → up blocks (which
concatenate the saved down-path states) → GroupNorm, SiLU, ``conv_out``. The timestep enters every ResNet
through ``time_embedding``; the text states enter every transformer's cross-attention.

One naming quirk is kept from diffusers: ``attention_head_dim`` holds the number of *heads* per level unless
``num_attention_heads`` is given (SD 2.1: ``[5, 10, 20, 20]`` heads of 64 channels each).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ...backend import jt, nn

from ...errors import ConfigError
from .config_check import resolve_config
from .embeddings import TimestepEmbedding, timestep_features
from .resnet import Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D
from .stages import Stage, run_stages
from .transformer import BasicTransformerBlock, Transformer2DModel

CROSS_DOWN, PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"

# Keys this implementation builds from (diffusers' defaults).
DEFAULTS: Dict[str, Any] = {
    "sample_size": None,
    "in_channels": 4,
    "out_channels": 4,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": [CROSS_DOWN, CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN],
    "up_block_types": [PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1280,
    "transformer_layers_per_block": 1,
    "attention_head_dim": 8,
    "num_attention_heads": None,
    "use_linear_projection": False,
    "upcast_attention": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
# Keys with the one value implemented; other unknown keys must be None/False/0/empty.
FIXED: Dict[str, Any] = {
    "center_input_sample": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "dropout": 0.0,
    "act_fn": "silu",
    "resnet_time_scale_shift": "default",
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "attention_type": "default",
    "addition_embed_type_num_heads": 64,
}
PER_LEVEL = ("layers_per_block", "attention_head_dim", "num_attention_heads", "cross_attention_dim",
             "transformer_layers_per_block")


def resolve_unet_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A diffusers ``unet/config.json`` dict, completed with defaults and checked; raises ConfigError."""
    cfg = resolve_config(config, {**DEFAULTS, **FIXED}, FIXED, owner="unet")
    n = len(cfg["block_out_channels"])
    for key in ("down_block_types", "up_block_types"):
        if len(cfg[key]) != n:
            raise ConfigError(f"unet: '{key}' has {len(cfg[key])} entries, 'block_out_channels' has {n}")
    for key, allowed in (("down_block_types", (CROSS_DOWN, PLAIN_DOWN)), ("up_block_types", (CROSS_UP, PLAIN_UP))):
        for kind in cfg[key]:
            if kind not in allowed:
                raise ConfigError(f"unet: '{key}' entry {kind!r} is not supported (only {allowed})")
    if not isinstance(cfg["norm_num_groups"], int):
        raise ConfigError(f"unet: 'norm_num_groups' = {cfg['norm_num_groups']!r} must be an int")
    for key in PER_LEVEL:
        value = cfg[key]
        if value is not None and not isinstance(value, int) and (
                len(value) != n or not all(isinstance(v, int) for v in value)):
            raise ConfigError(f"unet: '{key}' = {value!r} must be an int or a list of {n} ints")
    return cfg


def _per_level(value, n: int) -> List[int]:
    return [value] * n if isinstance(value, int) else list(value)


def _timesteps(timestep, batch: int) -> jt.Var:
    """A number, a 0-d / [1] / [batch] array or Var -> float32 Var [batch]."""
    if not isinstance(timestep, jt.Var):
        timestep = jt.array(np.asarray(timestep, dtype=np.float32))
    t = timestep.float32().reshape(-1)
    if t.shape[0] == 1 and batch > 1:
        t = t.broadcast([batch])
    if t.shape[0] != batch:
        raise ValueError(f"unet: {t.shape[0]} timesteps given for a batch of {batch}")
    return t


class DownBlock2D(nn.Module):
    """diffusers' ``DownBlock2D``; given ``transformer`` (channels -> module) its ``CrossAttnDownBlock2D``.

    The three block classes hold modules under diffusers' names; :meth:`UNet2DConditionModel.stages` runs them.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int, groups: int,
                 eps: float, add_downsample: bool, padding: int,
                 transformer: Optional[Callable[[int], Transformer2DModel]] = None):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if j == 0 else out_channels, out_channels, temb_channels, groups, eps)
            for j in range(num_layers)])
        self.attentions = nn.ModuleList([transformer(out_channels) for _ in range(num_layers)]) \
            if transformer else None
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding)]) if add_downsample else None


class UNetMidBlock2DCrossAttn(nn.Module):
    """ResNet → spatial transformer → ResNet at the lowest resolution."""

    def __init__(self, channels: int, temb_channels: int, groups: int, eps: float, output_scale_factor: float,
                 transformer: Callable[[int], Transformer2DModel]):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(channels, channels, temb_channels, groups, eps, output_scale_factor) for _ in range(2)])
        self.attentions = nn.ModuleList([transformer(channels)])


class UpBlock2D(nn.Module):
    """diffusers' ``UpBlock2D``; given ``transformer`` its ``CrossAttnUpBlock2D``.

    ``in_channels`` is the width of the deepest skip state it takes, ``prev_channels`` that of its input.
    """

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb_channels: int,
                 num_layers: int, groups: int, eps: float, add_upsample: bool,
                 transformer: Optional[Callable[[int], Transformer2DModel]] = None):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D((prev_channels if j == 0 else out_channels)
                          + (in_channels if j == num_layers - 1 else out_channels),
                          out_channels, temb_channels, groups, eps)
            for j in range(num_layers)])
        self.attentions = nn.ModuleList([transformer(out_channels) for _ in range(num_layers)]) \
            if transformer else None
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None


class UNet2DConditionModel(nn.Module):
    """``unet(sample [B,C,H,W], timestep, encoder_hidden_states [B,N,D]) -> [B,C_out,H,W]``.

    Runs in the weights' dtype and returns the sample's dtype; norms and softmax compute in float32.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        cfg = resolve_unet_config(config)
        self.config = cfg
        channels = list(cfg["block_out_channels"])
        n = len(channels)
        layers = _per_level(cfg["layers_per_block"], n)
        heads = _per_level(cfg["num_attention_heads"] or cfg["attention_head_dim"], n)
        cross = _per_level(cfg["cross_attention_dim"], n)
        depth = _per_level(cfg["transformer_layers_per_block"], n)
        groups, eps, temb = cfg["norm_num_groups"], cfg["norm_eps"], channels[0] * 4

        def transformer(level: int):
            return partial(Transformer2DModel, heads=heads[level], cross_attention_dim=cross[level], groups=groups,
                           num_layers=depth[level], use_linear_projection=cfg["use_linear_projection"],
                           upcast_attention=cfg["upcast_attention"])

        k_in, k_out = cfg["conv_in_kernel"], cfg["conv_out_kernel"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], channels[0], k_in, padding=(k_in - 1) // 2)
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.down_blocks = nn.ModuleList([
            DownBlock2D(channels[max(i - 1, 0)], channels[i], temb, layers[i], groups, eps, i < n - 1,
                        cfg["downsample_padding"], transformer(i) if kind == CROSS_DOWN else None)
            for i, kind in enumerate(cfg["down_block_types"])])
        self.mid_block = UNetMidBlock2DCrossAttn(channels[-1], temb, groups, eps, cfg["mid_block_scale_factor"],
                                                 transformer(n - 1))
        self.up_blocks = nn.ModuleList([
            UpBlock2D(channels[max(n - 2 - i, 0)], channels[min(n - i, n - 1)], channels[n - 1 - i], temb,
                      layers[n - 1 - i] + 1, groups, eps, i < n - 1,
                      transformer(n - 1 - i) if kind == CROSS_UP else None)
            for i, kind in enumerate(cfg["up_block_types"])])
        self.conv_norm_out = GroupNorm(groups, channels[0], eps)
        self.conv_out = nn.Conv2d(channels[0], cfg["out_channels"], k_out, padding=(k_out - 1) // 2)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "UNet2DConditionModel":
        """Build from a diffusers ``unet/config.json`` dict (random weights)."""
        return cls(config)

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def transformer_blocks(self) -> List[BasicTransformerBlock]:
        """All BasicTransformerBlocks in StyleBlend's numbering: down blocks, mid, up blocks (SD 2.1: 0..15)."""
        holders = list(self.down_blocks) + [self.mid_block] + list(self.up_blocks)
        return [block for holder in holders if holder.attentions is not None
                for transformer in holder.attentions for block in transformer.transformer_blocks]

    def stage_inputs(self, sample: jt.Var, timestep, encoder_hidden_states: jt.Var) -> Dict[str, jt.Var]:
        """The named inputs of :meth:`stages`: ``sample``, ``timestep`` (float32 [batch], never differentiated),
        ``context``."""
        t = _timesteps(timestep, sample.shape[0]).stop_grad()
        return {"sample": sample, "timestep": t, "context": encoder_hidden_states}

    def stages(self) -> List[Stage]:
        """The forward pass as stages (one per ResNet, transformer, resampler): reads :meth:`stage_inputs`,
        writes ``out`` (in the weights' dtype). The down path keeps its states as ``skip0``, ``skip1``, …; the up
        path takes them back in reverse. Each up block's upsampler runs in the next stage, which knows the size of
        the skip state it meets."""
        dtype, cfg = self.dtype, self.config

        def embed(t):
            features = timestep_features(t, cfg["block_out_channels"][0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
            return (self.time_embedding(features.cast(dtype)),)

        def conv_in(sample):
            x = self.conv_in(sample.cast(dtype))
            return x, x

        stages = [Stage(embed, ("timestep",), ("temb",), (self.time_embedding,)),
                  Stage(lambda c: (c.cast(dtype),), ("context",), ("ctx",)),
                  Stage(conv_in, ("sample",), ("x", "skip0"), (self.conv_in,))]
        skip = 0

        def kept(module, *names):  # x = module(x, ...), also kept as the next skip state
            nonlocal skip
            skip += 1
            return _stage(module, *names, writes=("x", f"skip{skip}"))

        for block in self.down_blocks:
            for j, resnet in enumerate(block.resnets):
                if block.attentions is None:
                    stages.append(kept(resnet, "temb"))
                else:
                    stages += [_stage(resnet, "temb"), kept(block.attentions[j], "ctx")]
            if block.downsamplers is not None:
                stages.append(kept(block.downsamplers[0]))
        mid = self.mid_block
        stages += [_stage(mid.resnets[0], "temb"), _stage(mid.attentions[0], "ctx"), _stage(mid.resnets[1], "temb")]
        upsampler = None
        for block in self.up_blocks:
            for j, resnet in enumerate(block.resnets):
                stages.append(_up_stage(upsampler, resnet, f"skip{skip}"))
                upsampler, skip = None, skip - 1
                if block.attentions is not None:
                    stages.append(_stage(block.attentions[j], "ctx"))
            upsampler = block.upsamplers[0] if block.upsamplers is not None else None

        def conv_out(x):
            return (self.conv_out(nn.silu(self.conv_norm_out(x))),)

        stages.append(Stage(conv_out, ("x",), ("out",), (self.conv_norm_out, self.conv_out)))
        return stages

    def execute(self, sample: jt.Var, timestep, encoder_hidden_states: jt.Var) -> jt.Var:
        state = run_stages(self.stages(), self.stage_inputs(sample, timestep, encoder_hidden_states))
        return state["out"].cast(sample.dtype)


def _stage(module: nn.Module, *names: str, writes: Tuple[str, ...] = ("x",)) -> Stage:
    """``x = module(x, *state[names])``, written under each name of ``writes``."""
    return Stage(lambda *a: (module(*a),) * len(writes), ("x",) + names, writes, (module,))


def _up_stage(upsampler: Optional[nn.Module], resnet: nn.Module, skip: str) -> Stage:
    """Upsample ``x`` to the skip state's size (after an up block that has an upsampler), concatenate, ResNet."""
    def fn(x, skip_state, temb):
        if upsampler is not None:
            x = upsampler(x, skip_state.shape[2:])
        return (resnet(jt.concat([x, skip_state], dim=1), temb),)

    modules = (resnet,) if upsampler is None else (upsampler, resnet)
    return Stage(fn, ("x", skip, "temb"), ("x",), modules)
