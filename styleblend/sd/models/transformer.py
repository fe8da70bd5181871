"""The UNet's spatial transformers: ``Transformer2DModel`` holding ``BasicTransformerBlock``s.

A ``BasicTransformerBlock`` is self-attention ``attn1``, cross-attention ``attn2`` (on the text states) and a
GEGLU feed-forward ``ff``, each after a LayerNorm and added back residually. These blocks are the "layers"
StyleBlend's query / key-value injection addresses (see ``UNet2DConditionModel.transformer_blocks``).
"""
from __future__ import annotations

from ...backend import jt, nn

from .attention import Attention
from .ops import permute
from .resnet import GroupNorm


class LayerNorm(nn.Module):
    """``torch.nn.LayerNorm`` over the last axis, computed in float32 and returned in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = jt.ones(dim)
        self.bias = jt.zeros(dim)

    def execute(self, x: jt.Var) -> jt.Var:
        h = x.float32()
        centered = h - h.mean(dim=-1, keepdims=True)
        var = (centered * centered).mean(dim=-1, keepdims=True)
        h = centered / jt.sqrt(var + self.eps) * self.weight.float32() + self.bias.float32()
        return h.cast(x.dtype)


class GEGLU(nn.Module):
    """``proj`` to twice the width, then ``value * gelu(gate)`` (exact, erf-based GELU)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def execute(self, x: jt.Var) -> jt.Var:
        value, gate = jt.chunk(self.proj(x), 2, dim=-1)
        return value * nn.gelu(gate)


class FeedForward(nn.Module):
    """``net.0`` GEGLU (4x width), ``net.1`` diffusers' dropout slot (p=0, identity), ``net.2`` Linear."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def execute(self, x: jt.Var) -> jt.Var:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """norm1/attn1 (self), norm2/attn2 (cross), norm3/ff; each a residual branch."""

    def __init__(self, dim: int, heads: int, head_dim: int, cross_attention_dim: int,
                 upcast_attention: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads, head_dim, upcast_attention=upcast_attention)
        self.norm2 = LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim, heads, head_dim, upcast_attention=upcast_attention)
        self.norm3 = LayerNorm(dim)
        self.ff = FeedForward(dim)

    def execute(self, x: jt.Var, context: jt.Var) -> jt.Var:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    """GroupNorm → ``proj_in`` → blocks over the H*W tokens → ``proj_out``, added to the input.

    ``proj_in`` / ``proj_out`` are Linear layers when ``use_linear_projection`` (SD 2.x), else 1x1 convolutions.
    """

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, groups: int, num_layers: int = 1,
                 use_linear_projection: bool = False, upcast_attention: bool = False):
        super().__init__()
        head_dim = channels // heads
        inner = heads * head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        if use_linear_projection:
            self.proj_in, self.proj_out = nn.Linear(channels, inner), nn.Linear(inner, channels)
        else:
            self.proj_in, self.proj_out = nn.Conv2d(channels, inner, 1), nn.Conv2d(inner, channels, 1)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(inner, heads, head_dim, cross_attention_dim, upcast_attention)
            for _ in range(num_layers)])

    def execute(self, x: jt.Var, context: jt.Var) -> jt.Var:
        b, _, h, w = x.shape
        tokens = self.norm(x)
        if not self.use_linear_projection:
            tokens = self.proj_in(tokens)
        tokens = permute(tokens, (0, 2, 3, 1)).reshape(b, h * w, tokens.shape[1])
        if self.use_linear_projection:
            tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        if self.use_linear_projection:
            tokens = self.proj_out(tokens)
        tokens = permute(tokens.reshape(b, h, w, tokens.shape[-1]), (0, 3, 1, 2))
        if not self.use_linear_projection:
            tokens = self.proj_out(tokens)
        return tokens + x
