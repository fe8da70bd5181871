"""The fused attention's online-softmax algorithm (its C++ form, through jt.code on CPU) and its blockwise
backward against the naive ``scaled_dot_product_attention``, and the dispatch rule. The CUDA kernels are checked
by bench/attention.py."""
import numpy as np
import pytest

from styleblend.errors import ConfigError
from styleblend.sd.models import fused_attention as fa
from styleblend.sd.models.attention import scaled_dot_product_attention

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


def test_dispatch_rule(monkeypatch):
    q, k, v = qkv(1, 2, 8, 5, 64)
    assert not fa.fits(q, k, v)  # plain Vars require grad: training keeps the naive path unless asked
    assert fa.fits(q.stop_grad(), k.stop_grad(), v.stop_grad())
    with jt.no_grad():
        assert fa.fits(q, k, v)
        assert not fa.fits(q, k, v, mask=jt.zeros((8, 5)))
        assert not fa.fits(*qkv(1, 2, 8, 5, 12))    # head dim not a multiple of 8
        assert not fa.fits(*qkv(1, 2, 8, 5, 136))   # above MAX_HEAD_DIM
        assert not fa.fits(q.float64(), k.float64(), v.float64())
        assert not fa.fits(q, k[:, :, :, :32], v[:, :, :, :32])
        assert not fa.supported(q, k, v)  # CUDA is off in CI: the naive path runs
    monkeypatch.setattr(fa, "backward_enabled", True)  # STYLEBLEND_FUSED_BACKWARD=1
    assert fa.fits(q, k, v)


@pytest.mark.parametrize("dtype, block_rows, tol", [
    ("float32", 8, 1e-5),    # 37 queries: four full blocks and a partial one
    ("float32", 0, 1e-5),    # the default block: all queries at once
    ("float16", 16, 2e-2),   # products in float16, softmax and sums in float32
])
def test_gradients_match_naive_attention(dtype, block_rows, tol):
    q, k, v = (x.cast(dtype) for x in qkv(2, 3, 37, 29, 16, seed=2))
    weight = jt.array(np.random.default_rng(3).standard_normal((2, 3, 37, 16)).astype("float32"))

    def grads(attend):
        return [g.float32().numpy() for g in jt.grad((attend(q, k, v).float32() * weight).sum(), [q, k, v])]

    expected = grads(lambda *x: scaled_dot_product_attention(*(t.float32() for t in x)))
    got = grads(lambda *x: fa.fused_attention(*x, block_rows=block_rows))
    for name, g, e in zip("qkv", got, expected):
        err = np.abs(g - e).max() / np.abs(e).max()
        assert err < tol, f"d{name}: relative error {err:.2e}"


def test_unet_lora_gradients_are_the_same_through_the_fused_path(lora_unet, monkeypatch):
    """Training through the whole (tiny) UNet: the fused forward + blockwise backward, forced on here on the CPU,
    gives the LoRA gradients of the naive attention."""
    unet, params, x, context = lora_unet(1)

    def lora_grads():
        return [g.numpy() for g in jt.grad((unet(x, 500, context) ** 2).mean(), params)]

    expected = lora_grads()
    calls = []
    monkeypatch.setattr(fa, "backward_enabled", True)
    monkeypatch.setattr(fa, "supported", lambda *a: calls.append(fa.fits(*a)) or calls[-1])
    got = lora_grads()
    assert calls and all(calls), "every UNet attention took the fused path"
    scale = max(np.abs(e).max() for e in expected)  # (self-attention over one token has zero q/k gradients)
    errors = [np.abs(g - e).max() / scale for g, e in zip(got, expected)]
    assert max(errors) < 1e-4, f"largest relative error of a LoRA gradient: {max(errors):.2e}"
