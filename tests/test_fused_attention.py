"""The fused attention's online-softmax algorithm (its C++ form, through jt.code on CPU) against the naive
``scaled_dot_product_attention``, and the dispatch rule. The CUDA kernels are checked by bench/attention.py."""
import numpy as np
import pytest

from styleblend.errors import ConfigError
from styleblend.models import fused_attention as fa
from styleblend.models.attention import scaled_dot_product_attention

import jittor as jt  # noqa: E402  (after styleblend: it sets Jittor's flags)


def qkv(b, h, nq, nk, d, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jt.array((rng.standard_normal((b, h, n, d)) * scale).astype("float32")) for n in (nq, nk, nk))


@pytest.mark.parametrize("b, h, nq, nk, d", [
    (2, 3, 1, 1, 64),      # one query, one key
    (1, 2, 37, 37, 64),    # below one tile
    (2, 2, 64, 130, 64),   # keys: two full tiles and a partial one
    (1, 3, 100, 77, 40),   # cross-attention-like key count, head dim not a multiple of 16
])
def test_matches_naive_attention(b, h, nq, nk, d):
    q, k, v = qkv(b, h, nq, nk, d)
    fused = fa.fused_attention(q, k, v).numpy()
    assert fused.shape == (b, h, nq, d)
    np.testing.assert_allclose(fused, scaled_dot_product_attention(q, k, v).numpy(), rtol=0, atol=1e-5)


def test_large_scores_are_stable():
    """Scores in the hundreds (exp() overflows float32): the running maximum keeps the result finite and right."""
    q, k, v = qkv(1, 2, 20, 150, 64, scale=6.0, seed=1)
    qn, kn, vn = (x.numpy().astype(np.float64) for x in (q, k, v))
    scores = qn @ kn.transpose(0, 1, 3, 2) / 8.0
    assert scores.max() > 100
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (probs / probs.sum(-1, keepdims=True)) @ vn
    np.testing.assert_allclose(fa.fused_attention(q, k, v).numpy(), expected, rtol=0, atol=1e-3)


def test_unsupported_head_dim_is_refused():
    with pytest.raises(ConfigError, match="head dim 12"):
        fa.fused_attention(*qkv(1, 1, 4, 4, 12))


def test_dispatch_rule():
    q, k, v = qkv(1, 2, 8, 5, 64)
    assert not fa.fits(q, k, v)  # plain Vars require grad: training keeps the naive path
    with jt.no_grad():
        assert fa.fits(q, k, v)
        assert not fa.fits(q, k, v, mask=jt.zeros((8, 5)))
        assert not fa.fits(*qkv(1, 2, 8, 5, 12))    # head dim not a multiple of 8
        assert not fa.fits(*qkv(1, 2, 8, 5, 136))   # above MAX_HEAD_DIM
        assert not fa.fits(q.float64(), k.float64(), v.float64())
        assert not fa.fits(q, k[:, :, :, :32], v[:, :, :, :32])
        assert not fa.supported(q, k, v)  # CUDA is off in CI: the naive path runs
    assert fa.fits(q.stop_grad(), k.stop_grad(), v.stop_grad())
