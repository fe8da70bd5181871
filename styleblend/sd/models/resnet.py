"""Convolutional pieces of the SD 2.x UNet (and VAE): GroupNorm, ResnetBlock2D, Downsample2D, Upsample2D.

Names of layers and parameters follow diffusers (``norm1``, ``conv1``, ``time_emb_proj``, ``conv_shortcut``,
``conv``), so diffusers' weights load by name.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ...backend import jt, nn
from . import fused_group_norm


class GroupNorm(nn.Module):
    """``torch.nn.GroupNorm`` (affine), computed in float32 whatever the input dtype, returned in that dtype.

    On CUDA the fused kernels run (``fused_group_norm.supported``); elsewhere the plain Jittor ops below."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels do not split into {num_groups} groups")
        self.num_groups = num_groups
        self.eps = eps
        self.weight = jt.ones(num_channels)
        self.bias = jt.zeros(num_channels)

    def execute(self, x: jt.Var) -> jt.Var:
        if fused_group_norm.supported(x):
            return fused_group_norm.fused_group_norm(x, self.weight, self.bias, self.num_groups, self.eps)
        b, c = x.shape[0], x.shape[1]
        h = x.float32().reshape(b, self.num_groups, -1)
        mean = h.mean(dim=-1, keepdims=True)
        centered = h - mean
        var = (centered * centered).mean(dim=-1, keepdims=True)
        h = (centered / jt.sqrt(var + self.eps)).reshape(x.shape)
        shape = [1, c] + [1] * (x.ndim - 2)
        h = h * self.weight.float32().reshape(shape) + self.bias.float32().reshape(shape)
        return h.cast(x.dtype)


class ResnetBlock2D(nn.Module):
    """norm1 → SiLU → conv1 (+ projected time embedding) → norm2 → SiLU → conv2, plus a (1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: Optional[int], groups: int,
                 eps: float, output_scale_factor: float = 1.0):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = GroupNorm(groups, out_channels, eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor

    def execute(self, x: jt.Var, temb: Optional[jt.Var] = None) -> jt.Var:
        h = self.conv1(nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(nn.silu(temb))[:, :, None, None]
        h = self.conv2(nn.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale_factor


class Downsample2D(nn.Module):
    """3x3 convolution with stride 2; ``padding=0`` pads right/bottom by one first (diffusers' rule)."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def execute(self, x: jt.Var) -> jt.Var:
        if self.padding == 0:
            x = nn.pad(x, [0, 1, 0, 1])
        return self.conv(x)


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source rows of PyTorch's ``interpolate(mode="nearest")``: ``floor(i * in / out)`` in float32."""
    scale = np.float32(size_in) / np.float32(size_out)
    idx = np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int32)
    return np.minimum(idx, size_in - 1)


class Upsample2D(nn.Module):
    """Nearest-neighbour resize (to ``size``, else 2x) followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def execute(self, x: jt.Var, size: Optional[Sequence[int]] = None) -> jt.Var:
        h, w = x.shape[2], x.shape[3]
        out_h, out_w = size if size is not None else (2 * h, 2 * w)
        x = x[:, :, jt.array(nearest_indices(h, out_h))]
        x = x[:, :, :, jt.array(nearest_indices(w, out_w))]
        return self.conv(x)
