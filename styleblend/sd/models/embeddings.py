"""Timestep embeddings of the SD 2.x UNet: sinusoidal features, then ``linear_1`` → SiLU → ``linear_2``."""
from __future__ import annotations

import math

import numpy as np

from ...backend import jt, nn


def timestep_features(timesteps: jt.Var, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                      max_period: int = 10000) -> jt.Var:
    """[N] float timesteps -> [N, dim] float32 ``[sin | cos]`` features (``[cos | sin]`` when flipped)."""
    half = dim // 2
    exponent = np.arange(half, dtype=np.float32) * np.float32(-math.log(max_period))
    freqs = np.exp(exponent / np.float32(half - freq_shift)).astype(np.float32)
    args = timesteps.float32()[:, None] * jt.array(freqs)[None, :]
    sin, cos = jt.sin(args), jt.cos(args)
    emb = jt.concat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2:
        emb = nn.pad(emb, [0, 1])
    return emb


class TimestepEmbedding(nn.Module):
    """diffusers' ``TimestepEmbedding`` with SiLU: two linear layers."""

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def execute(self, x: jt.Var) -> jt.Var:
        return self.linear_2(nn.silu(self.linear_1(x)))
