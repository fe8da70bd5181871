"""Stable Diffusion's VAE (diffusers' ``AutoencoderKL``) in Jittor, with diffusers' names and config keys.

``encode`` maps images in [-1, 1] to a :class:`DiagonalGaussian` over latents, ``decode`` maps latents back;
neither applies ``scaling_factor`` (the caller multiplies / divides, as in diffusers' pipelines). Group norms
and the mid-block softmax compute in float32 whatever the weights' dtype; inputs are cast to the weights'
dtype and outputs returned in float32.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from ...backend import jt, nn

from ...errors import ConfigError
from .attention import Attention
from .ops import permute
from .config_check import resolve_config
from .resnet import Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D

DEFAULTS: Dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
    "force_upcast": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}
FIXED = {"act_fn": "silu", "shift_factor": None, "latents_mean": None, "latents_std": None,
         "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True}
NORM_EPS = 1e-6


def resolve_vae_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """diffusers' ``vae/config.json`` checked against what :class:`AutoencoderKL` builds."""
    cfg = resolve_config(config, DEFAULTS, FIXED, owner="AutoencoderKL")
    channels = list(cfg["block_out_channels"])
    for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        types = list(cfg[key])
        if types != [kind] * len(channels):
            raise ConfigError(f"AutoencoderKL: config key '{key}' = {types!r} must be {len(channels)} x '{kind}' "
                              f"(one per block_out_channels entry)")
        cfg[key] = types
    bad = [c for c in channels if c % cfg["norm_num_groups"]]
    if bad:
        raise ConfigError(f"AutoencoderKL: block_out_channels {bad} not divisible by "
                          f"norm_num_groups = {cfg['norm_num_groups']}")
    cfg["block_out_channels"] = channels
    return cfg


def resnet_stack(in_channels: int, out_channels: int, layers: int, groups: int) -> nn.ModuleList:
    """``layers`` resnets without time embedding, the first one changing the channel count."""
    return nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, None, groups, NORM_EPS)
                          for i in range(layers)])


class DownEncoderBlock(nn.Module):
    """``DownEncoderBlock2D``: resnets, then an optional ``Downsample2D`` (``downsamplers.0``)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, layers, groups)
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=0)]) if downsample else None

    def execute(self, x: jt.Var) -> jt.Var:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsamplers is None else self.downsamplers[0](x)


class UpDecoderBlock(nn.Module):
    """``UpDecoderBlock2D``: resnets, then an optional ``Upsample2D`` (``upsamplers.0``)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, layers, groups)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if upsample else None

    def execute(self, x: jt.Var) -> jt.Var:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class SpatialSelfAttention(Attention):
    """The mid-block attention: group norm, one head over all pixels (``to_q`` ... with biases), residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, heads=1, dim_head=channels, bias=True, upcast_attention=True)
        self.group_norm = GroupNorm(groups, channels, NORM_EPS)

    def execute(self, x: jt.Var) -> jt.Var:
        b, c, h, w = x.shape
        tokens = permute(self.group_norm(x).reshape(b, c, h * w), (0, 2, 1))
        out = super().execute(tokens)
        return x + permute(out, (0, 2, 1)).reshape(b, c, h, w)


class MidBlock(nn.Module):
    """``UNetMidBlock2D`` of the VAE: resnet, attention, resnet."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)])
        self.resnets = resnet_stack(channels, channels, 2, groups)

    def execute(self, x: jt.Var) -> jt.Var:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Encoder(nn.Module):
    """Images ``[B, in, H, W]`` -> Gaussian moments ``[B, 2 * latent, H / f, W / f]``."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        ch, groups, last = cfg["block_out_channels"], cfg["norm_num_groups"], len(cfg["block_out_channels"]) - 1
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownEncoderBlock(ch[max(i - 1, 0)], ch[i], cfg["layers_per_block"], groups, i < last)
            for i in range(len(ch))])
        self.mid_block = MidBlock(ch[-1], groups)
        self.conv_norm_out = GroupNorm(groups, ch[-1], NORM_EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg["latent_channels"], 3, padding=1)

    def execute(self, x: jt.Var) -> jt.Var:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(nn.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    """Latents ``[B, latent, h, w]`` -> images ``[B, out, h * f, w * f]``."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        ch, groups = cfg["block_out_channels"][::-1], cfg["norm_num_groups"]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], groups)
        self.up_blocks = nn.ModuleList([
            UpDecoderBlock(ch[max(i - 1, 0)], ch[i], cfg["layers_per_block"] + 1, groups, i < len(ch) - 1)
            for i in range(len(ch))])
        self.conv_norm_out = GroupNorm(groups, ch[-1], NORM_EPS)
        self.conv_out = nn.Conv2d(ch[-1], cfg["out_channels"], 3, padding=1)

    def execute(self, z: jt.Var) -> jt.Var:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(nn.silu(self.conv_norm_out(x)))


class DiagonalGaussian:
    """The encoder's posterior: ``mean`` and ``logvar`` (clamped to [-30, 20]) of shape ``[B, C, h, w]``."""

    def __init__(self, moments: jt.Var):
        c = moments.shape[1] // 2
        self.mean = moments[:, :c]
        self.logvar = moments[:, c:].clamp(-30.0, 20.0)
        self.std = (0.5 * self.logvar).exp()

    def sample(self, noise: Optional[jt.Var] = None) -> jt.Var:
        """``mean + std * noise``; ``noise`` defaults to a fresh ``jt.randn`` draw."""
        if noise is None:
            noise = jt.randn(self.mean.shape)
        return self.mean + self.std * noise


class AutoencoderKL(nn.Module):
    """diffusers' ``AutoencoderKL`` (SD 2.x VAE); build with :meth:`from_config`."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self.config = resolve_vae_config(config)
        latent = self.config["latent_channels"]
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "AutoencoderKL":
        """Build from a diffusers ``vae/config.json`` dictionary (random weights)."""
        return cls(config)

    @property
    def dtype(self) -> str:
        """The weights' dtype (``"float32"`` or ``"float16"``)."""
        return self.encoder.conv_in.weight.dtype

    def encode(self, images: jt.Var) -> DiagonalGaussian:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> posterior over un-scaled latents (float32)."""
        return DiagonalGaussian(self.quant_conv(self.encoder(images.cast(self.dtype))).float32())

    def decode(self, latents: jt.Var) -> jt.Var:
        """Un-scaled latents ``[B, C, h, w]`` -> images ``[B, 3, H, W]`` (float32, about [-1, 1]; H = 8h for SD)."""
        return self.decoder(self.post_quant_conv(latents.cast(self.dtype))).float32()
