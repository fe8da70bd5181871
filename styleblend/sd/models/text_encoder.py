"""CLIP's text transformer (transformers' ``CLIPTextModel``) in Jittor, with its names and config keys.

``te(input_ids [B, N])`` returns the last hidden state after the final layer norm, ``[B, N, hidden]``, the
conditioning Stable Diffusion 2.x reads. Parameter names carry the ``text_model.`` prefix of the saved
``model.safetensors``. Textual inversion grows the token table with :meth:`CLIPTextModel.add_token_rows`;
LoRA wraps the plain ``nn.Linear`` projections ``q_proj``/``k_proj``/``v_proj``/``out_proj``. Layer norms
and the softmax compute in float32 whatever the weights' dtype.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from ...backend import jt, nn

from ...errors import ConfigError
from .attention import merge_heads, scaled_dot_product_attention, split_heads
from .config_check import resolve_config
from .transformer import LayerNorm

DEFAULTS: Dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
    "pad_token_id": 1,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "model_type": "clip_text_model",
    "architectures": ["CLIPTextModel"],
    "torch_dtype": None,
    "dtype": None,
    "transformers_version": None,
}
FIXED = {"hidden_act": ("gelu", "quick_gelu"), "attention_dropout": 0.0, "model_type": "clip_text_model"}
MASKED = -1e9  # added to the attention scores of future tokens


def resolve_text_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """transformers' ``text_encoder/config.json`` checked against what :class:`CLIPTextModel` builds."""
    cfg = resolve_config(config, DEFAULTS, FIXED, owner="CLIPTextModel")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ConfigError(f"CLIPTextModel: hidden_size = {cfg['hidden_size']} is not divisible by "
                          f"num_attention_heads = {cfg['num_attention_heads']}")
    return cfg


def quick_gelu(x: jt.Var) -> jt.Var:
    """OpenAI CLIP's sigmoid approximation of GELU."""
    return x * jt.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": nn.gelu, "quick_gelu": quick_gelu}


class CLIPAttention(nn.Module):
    """Multi-head self-attention with biased ``q_proj``/``k_proj``/``v_proj``/``out_proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def execute(self, x: jt.Var, mask: jt.Var) -> jt.Var:
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(merge_heads(scaled_dot_product_attention(q, k, v, mask=mask)))


class CLIPMLP(nn.Module):
    """``fc1`` -> activation -> ``fc2``."""

    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def execute(self, x: jt.Var) -> jt.Var:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer layer: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        dim, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.self_attn = CLIPAttention(dim, cfg["num_attention_heads"])
        self.layer_norm1 = LayerNorm(dim, eps)
        self.mlp = CLIPMLP(dim, cfg["intermediate_size"], cfg["hidden_act"])
        self.layer_norm2 = LayerNorm(dim, eps)

    def execute(self, x: jt.Var, mask: jt.Var) -> jt.Var:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPTextEmbeddings(nn.Module):
    """Token plus learned position embeddings."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.position_embedding = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])
        self._trained_row: Optional[Tuple[int, jt.Var]] = None  # (token id, row) while that row trains alone

    def execute(self, input_ids: jt.Var) -> jt.Var:
        n, limit = input_ids.shape[1], self.position_embedding.weight.shape[0]
        if n > limit:
            raise ValueError(f"CLIPTextModel: {n} tokens exceed max_position_embeddings = {limit}")
        tokens = self.token_embedding(input_ids)
        if self._trained_row is not None:
            token_id, row = self._trained_row
            hit = (input_ids == token_id).unsqueeze(-1).broadcast(tokens.shape)
            tokens = jt.ternary(hit, row.broadcast(tokens.shape), tokens.stop_grad())
        return tokens + self.position_embedding.weight[:n]


class CLIPEncoder(nn.Module):
    """The stack of :class:`CLIPEncoderLayer` (``layers.{i}``)."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def execute(self, x: jt.Var, mask: jt.Var) -> jt.Var:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CLIPTextTransformer(nn.Module):
    """Embeddings, causal encoder, final layer norm (transformers' ``text_model``)."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = LayerNorm(cfg["hidden_size"], cfg["layer_norm_eps"])

    def execute(self, input_ids: jt.Var) -> jt.Var:
        n = input_ids.shape[1]
        causal = jt.array(np.triu(np.full((n, n), MASKED, np.float32), 1))
        return self.final_layer_norm(self.encoder(self.embeddings(input_ids), causal))


class CLIPTextModel(nn.Module):
    """transformers' ``CLIPTextModel``; build with :meth:`from_config`, call with ``input_ids [B, N]``."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self.config = resolve_text_config(config)
        self.text_model = CLIPTextTransformer(self.config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "CLIPTextModel":
        """Build from a transformers ``text_encoder/config.json`` dictionary (random weights)."""
        return cls(config)

    @property
    def token_embedding_weight(self) -> jt.Var:
        """The token embedding table ``[vocab, hidden]`` (the variable itself, trainable)."""
        return self.text_model.embeddings.token_embedding.weight

    def add_token_rows(self, init_ids: List[int]) -> List[int]:
        """Append one embedding row per entry, a copy of row ``init_ids[i]``; returns the new rows' ids."""
        table = self.token_embedding_weight.numpy()
        vocab = table.shape[0]
        bad = [i for i in init_ids if not 0 <= i < vocab]
        if bad:
            raise ValueError(f"CLIPTextModel: init token ids {bad} are outside the vocabulary (0..{vocab - 1})")
        embedding = self.text_model.embeddings.token_embedding
        embedding.weight = jt.array(np.concatenate([table, table[list(init_ids)]]))
        embedding.num_embeddings = vocab + len(init_ids)
        self.config["vocab_size"] = embedding.num_embeddings
        return list(range(vocab, vocab + len(init_ids)))

    @contextmanager
    def trainable_row(self, token_id: int) -> Iterator[jt.Var]:
        """Row ``token_id`` of the token table as a variable of its own (textual inversion's parameter).

        Inside the block the encoder reads that token's embedding from the yielded variable and the rest of the
        table is fixed (no gradient); at exit the variable's values are written into the table. AdamW on this row
        is the same update as AdamW on the whole table with every other row put back after each step (AdamW is
        element-wise), without a gradient and optimizer state the table's size (49410 × 1024 in SD 2.1).
        """
        vocab = self.token_embedding_weight.shape[0]
        if not 0 <= token_id < vocab:
            raise ValueError(f"CLIPTextModel: token id {token_id} is outside the vocabulary (0..{vocab - 1})")
        embeddings = self.text_model.embeddings
        row = jt.array(self.token_embedding_weight[token_id].numpy())
        embeddings._trained_row = (token_id, row)
        try:
            yield row
        finally:
            embeddings._trained_row = None
            self.token_embedding_weight[token_id] = row.detach()

    def clone(self) -> "CLIPTextModel":
        """An independent copy: every weight (and any LoRA layer) copied, the config too."""
        return copy.deepcopy(self)

    def execute(self, input_ids: jt.Var) -> jt.Var:
        """Last hidden state after the final layer norm, ``[B, N, hidden]``."""
        return self.text_model(input_ids)
