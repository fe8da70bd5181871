"""The fused GroupNorm's algorithm (its C++ form, through jt.code on CPU) against the plain ``resnet.GroupNorm``:
outputs, gradients of input, weight and bias, float16, a large mean, the dispatch rule, and the whole tiny UNet
through it. The CUDA kernels are checked by bench/group_norm.py."""
import numpy as np
import pytest

from styleblend.errors import ConfigError
from styleblend.sd.models import fused_group_norm as fgn
from styleblend.sd.models.resnet import GroupNorm

import jittor as jt  # noqa: E402  (after styleblend: it sets Jittor's flags)


def norm_and_input(shape, groups, mean=0.0, seed=0):
    rng = np.random.default_rng(seed)
    gn = GroupNorm(groups, shape[1], 1e-5)
    gn.weight.assign(jt.array(rng.standard_normal(shape[1]).astype("float32")))
    gn.bias.assign(jt.array(rng.standard_normal(shape[1]).astype("float32")))
    return gn, jt.array((rng.standard_normal(shape) * 2 + mean).astype("float32"))


def fused(gn, x):
    return fgn.fused_group_norm(x, gn.weight, gn.bias, gn.num_groups, gn.eps)


def group_norm_float64(gn, x):
    """The definition, in numpy float64."""
    v = x.numpy().astype(np.float64)
    h = v.reshape(v.shape[0], gn.num_groups, -1)
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + gn.eps)
    shape = (1, v.shape[1]) + (1,) * (v.ndim - 2)
    return h.reshape(v.shape) * gn.weight.numpy().reshape(shape) + gn.bias.numpy().reshape(shape)


@pytest.mark.parametrize("shape, groups, mean", [
    ((2, 8, 5, 7), 4, 0.0),        # 4-D, odd pixel count
    ((1, 6, 3, 3, 2), 3, 0.0),     # 5-D
    ((3, 4, 1), 2, 0.0),           # one value per channel
    ((3, 32, 1, 1), 32, 5.0),      # one value per group: zero variance, the output is the bias
    ((2, 64, 12, 12), 32, 300.0),  # mean far above the spread: the shifted sums keep the variance
])
def test_forward_matches_the_definition(shape, groups, mean):
    """Within float32 rounding of the float64 result (at mean 300 the plain float32 path is 1.2e-4 off, this 2.7e-5)."""
    gn, x = norm_and_input(shape, groups, mean)
    got = fused(gn, x)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_allclose(got.numpy(), group_norm_float64(gn, x), rtol=0, atol=4e-5)


@pytest.mark.parametrize("shape, groups", [((2, 8, 5, 7), 4), ((2, 64, 12, 12), 32), ((1, 6, 3, 3, 2), 3)])
def test_gradients_match_group_norm(shape, groups):
    gn, x = norm_and_input(shape, groups, seed=1)
    dy = jt.array(np.random.default_rng(2).standard_normal(shape).astype("float32"))
    expected = jt.grad((gn(x) * dy).sum(), [x, gn.weight, gn.bias])
    got = jt.grad((fused(gn, x) * dy).sum(), [x, gn.weight, gn.bias])
    for name, g, e in zip(("x", "weight", "bias"), got, expected):
        err = float((g - e).abs().max() / e.abs().max())
        assert err < 1e-5, f"d{name}: relative error {err:.2e}"


def test_float16_input_gives_the_float32_result_rounded():
    gn, x = norm_and_input((2, 32, 9, 9), 8, mean=1.0, seed=3)
    x16 = x.float16()
    got = fused(gn, x16)
    assert got.dtype == x16.dtype
    expected = gn(x16.float32()).numpy()  # float32 arithmetic on the same float16 inputs
    np.testing.assert_allclose(got.float32().numpy(), expected, rtol=2e-3, atol=2e-3)
    dy = jt.ones(x16.shape, "float16")
    dx = jt.grad((got.float32() * dy.float32()).sum(), x16)
    assert dx.dtype == x16.dtype and bool(jt.isfinite(dx.float32()).all())


def test_bad_inputs_are_refused():
    gn, x = norm_and_input((2, 8, 4, 4), 4)
    with pytest.raises(ConfigError, match="do not split into 3 groups"):
        fgn.fused_group_norm(x, gn.weight, gn.bias, 3, 1e-5)
    with pytest.raises(ConfigError, match="float64"):
        fused(gn, x.float64())
    with pytest.raises(ConfigError, match=r"\[2, 128\]"):
        fused(gn, x.reshape(2, 128))


def test_dispatch_rule():
    _, x = norm_and_input((1, 4, 2, 2), 2)
    assert fgn.fits(x) and fgn.fits(x.float16())
    assert not fgn.fits(x.float64())
    assert not fgn.fits(x.reshape(1, 16))  # no pixel axis
    assert not fgn.supported(x)  # CUDA is off in CI: the plain path runs


def test_tiny_unet_is_the_same_through_the_fused_norm(lora_unet, monkeypatch):
    """The whole (tiny) UNet and its LoRA gradients with every GroupNorm forced onto the fused path on the CPU."""
    unet, params, x, context = lora_unet(2)

    def run():
        out = unet(x, 500, context)
        return out.numpy(), [g.numpy() for g in jt.grad((out ** 2).mean(), params)]

    expected_out, expected_grads = run()
    calls = []
    monkeypatch.setattr(fgn, "supported", lambda v: calls.append(fgn.fits(v)) or calls[-1])
    got_out, got_grads = run()
    assert len(calls) >= 10 and all(calls), "every GroupNorm of the UNet took the fused path"
    np.testing.assert_allclose(got_out, expected_out, rtol=0, atol=1e-4 * np.abs(expected_out).max())
    scale = max(np.abs(e).max() for e in expected_grads)
    errors = [np.abs(g - e).max() / scale for g, e in zip(got_grads, expected_grads)]
    assert max(errors) < 1e-4, f"largest relative error of a LoRA gradient: {max(errors):.2e}"
