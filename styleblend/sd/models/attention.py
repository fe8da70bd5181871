"""Multi-head attention with one hook: the single place where LoRA-free model code meets the method.

Every attention layer of the UNet (self ``attn1`` and cross ``attn2``) is an :class:`Attention`. Its
``hook`` attribute (``None`` by default) receives the projected queries, keys and values and returns the
ones to attend with, so StyleBlend's query / key-value exchange (``styleblend.blend``) and any probe in a
test are added from outside without editing the model. LoRA is added by replacing the projection layers
(``styleblend.models.lora``), which keeps the parameter names of the base weights.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Optional, Sequence, Tuple

from ...backend import jt, nn

from . import fused_attention
from .ops import permute

# hook(attn, q, k, v) -> (q, k, v); shapes [batch, tokens, heads * head_dim]
AttentionHook = Callable[["Attention", jt.Var, jt.Var, jt.Var], Tuple[jt.Var, jt.Var, jt.Var]]


def split_heads(x: jt.Var, heads: int) -> jt.Var:
    """[B, N, H*D] -> [B, H, N, D]."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(0, 2, 1, 3)


def merge_heads(x: jt.Var) -> jt.Var:
    """[B, H, N, D] -> [B, N, H*D]."""
    b, h, n, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def scaled_dot_product_attention(q: jt.Var, k: jt.Var, v: jt.Var, upcast: bool = False,
                                 mask: Optional[jt.Var] = None) -> jt.Var:
    """softmax(q kᵀ / sqrt(d) + mask) v over [B, H, N, D] inputs; softmax always in float32.

    ``mask`` (optional, float32) is added to the scores, e.g. a large negative number above the diagonal
    for CLIP's causal attention. On CUDA, for inference without a mask, the fused kernel runs instead
    (``fused_attention.supported`` is the rule; its scores are float32 either way, as ``upcast`` asks).
    """
    if fused_attention.supported(q, k, v, mask):
        return fused_attention.fused_attention(q, k, v)
    dtype = q.dtype
    if upcast:
        q, k = q.float32(), k.float32()
    scores = (jt.matmul(q, permute(k, (0, 1, 3, 2))) * (q.shape[-1] ** -0.5)).float32()
    if mask is not None:
        scores = scores + mask
    probs = nn.softmax(scores, dim=-1)
    return jt.matmul(probs.cast(v.dtype), v).cast(dtype)


class Attention(nn.Module):
    """diffusers' ``Attention`` as used by SD 2.x: ``to_q``/``to_k``/``to_v``/``to_out.0`` and a hook."""

    def __init__(self, query_dim: int, cross_attention_dim: Optional[int] = None, heads: int = 8,
                 dim_head: int = 64, bias: bool = False, upcast_attention: bool = False):
        super().__init__()
        inner = heads * dim_head
        context_dim = cross_attention_dim or query_dim
        self.heads = heads
        self.upcast_attention = upcast_attention
        self.is_cross_attention = cross_attention_dim is not None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])
        self.hook: Optional[AttentionHook] = None

    def execute(self, x: jt.Var, context: Optional[jt.Var] = None) -> jt.Var:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        if self.hook is not None:
            q, k, v = self.hook(self, q, k, v)
        out = scaled_dot_product_attention(split_heads(q, self.heads), split_heads(k, self.heads),
                                           split_heads(v, self.heads), self.upcast_attention)
        return self.to_out[0](merge_heads(out))


@contextmanager
def hooks_installed(layers: Sequence[Attention], hooks: Sequence[Optional[AttentionHook]]):
    """For a ``with`` block, ``layers[i].hook = hooks[i]``; the old hooks come back after."""
    before = [layer.hook for layer in layers]
    try:
        for layer, hook in zip(layers, hooks):
            layer.hook = hook
        yield
    finally:
        for layer, hook in zip(layers, before):
            layer.hook = hook
