"""New words for the text encoder: a tokenizer entry plus one embedding row (textual inversion's parameter).

The tokenizer is shared by every text encoder of a model, while each encoder has its own embedding table, so
a token's id may lie past an encoder's last row (e.g. ``<C>`` was added for the coarse encoder, then ``<F>``
for the base one). :func:`add_token` then grows the table up to that id; rows in between belong to tokens of
other encoders and are never used by this one.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ..backend import jt

from ..errors import StyleBlendError


def token_id(tokenizer, token: str) -> int:
    """The id of a single-token word; anything the tokenizer splits raises :class:`StyleBlendError`."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise StyleBlendError(f"init token {token!r} is {len(ids)} tokens {pieces}; choose a single-token word")
    return int(ids[0])


def add_token(tokenizer, text_encoder, token: str, init_token: str) -> int:
    """Add ``token`` to the tokenizer (if new) and give ``text_encoder`` its row, a copy of ``init_token``'s.

    Returns the token's id. When the encoder already has that row it is reset to ``init_token``'s embedding.
    """
    init_id = token_id(tokenizer, init_token)
    new_id = _register(tokenizer, token)
    weight = text_encoder.token_embedding_weight
    if new_id < weight.shape[0]:
        weight[new_id] = weight[init_id]
    else:
        text_encoder.add_token_rows([init_id] * (new_id + 1 - weight.shape[0]))
    return new_id


def set_token_row(tokenizer, text_encoder, token: str, row: np.ndarray) -> int:
    """Add ``token`` if new and set its embedding row to ``row`` (a saved embedding); returns its id."""
    weight = text_encoder.token_embedding_weight
    if tuple(row.shape) != (weight.shape[1],):
        raise StyleBlendError(f"embedding of {token!r} has shape {tuple(row.shape)}, the text encoder "
                              f"expects ({weight.shape[1]},)")
    new_id = _register(tokenizer, token)
    if new_id >= weight.shape[0]:
        text_encoder.add_token_rows([0] * (new_id + 1 - weight.shape[0]))
        weight = text_encoder.token_embedding_weight
    weight[new_id] = jt.array(row).cast(weight.dtype)
    return new_id


def nearest_tokens(text_encoder, tokenizer, token_id: int, k: int = 5) -> List[Tuple[str, float]]:
    """The ``k`` words of the base vocabulary whose embeddings are closest (cosine) to row ``token_id``.

    Added tokens (``<C>``, ``<F>``) and the row itself are left out; words are decoded (``"&"``, not ``"&</w>"``).
    """
    table = text_encoder.token_embedding_weight.numpy().astype(np.float64)
    query = table[token_id]
    words = table[: tokenizer.vocab_size]
    norms = np.maximum(np.linalg.norm(words, axis=1) * np.linalg.norm(query), 1e-12)
    cosine = words @ query / norms
    if token_id < len(cosine):
        cosine[token_id] = -np.inf
    best = np.argsort(-cosine, kind="stable")[:k]
    return [(tokenizer.decode([int(i)]).strip(), float(cosine[i])) for i in best]


def _register(tokenizer, token: str) -> int:
    """Add ``token`` to the tokenizer unless an earlier call did; returns its id. Words of the base
    vocabulary are refused: training their row would change what the word means in every prompt."""
    taken = StyleBlendError(f"token {token!r} is already a word of the vocabulary; choose a new one such as '<S>'")
    if token not in tokenizer.get_vocab():
        if len(tokenizer.encode(token, add_special_tokens=False)) == 1:  # e.g. "dog" is the entry "dog</w>"
            raise taken
        tokenizer.add_tokens([token])
    new_id = int(tokenizer.convert_tokens_to_ids(token))
    if new_id < tokenizer.vocab_size:
        raise taken
    return new_id
