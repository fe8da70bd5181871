"""Fused vs naive attention on CUDA: max relative error and ms per call at SD 2.1's 768² attention shapes.

    STYLEBLEND_DEVICE=cuda python bench/attention.py [--warps 4 8] [--dtypes float16 float32]
    STYLEBLEND_DEVICE=cuda python bench/attention.py --backward [--dtypes float32]

``--backward``: gradients instead (training, batch 1): dq, dk, dv of the fused attention (blockwise backward) and
of the naive one against the naive gradients in float32 (max |x - ref| over the largest |ref| of the three), and
ms per forward + backward.

One JSON line per (shape, dtype): the naive path's time, the fused kernel's time per ``warps`` variant (float16),
and each one's max |x - ref| / max |ref| against the naive attention computed in float32 from the same inputs.
Odd shapes (tails of the query and key tiles, head dims 40/80/128) are checked first, with 4 warps, untimed.
All under ``jt.no_grad()`` (inference), inputs [B, H, N, d] from a seeded normal draw.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from styleblend.runtime import start

jt = start(0)
from styleblend.sd.models import fused_attention as fa  # noqa: E402
from styleblend.sd.models.attention import scaled_dot_product_attention  # noqa: E402
from unet_step import gpu_name, timed_ms  # noqa: E402  (bench/ is the script's folder)

CHECKS = [(2, 3, 100, 77, 64), (1, 2, 200, 130, 40), (1, 2, 65, 300, 80), (1, 1, 33, 129, 128), (1, 1, 1, 1, 64)]
SD21 = [(4, 5, 9216, 9216, 64), (4, 10, 2304, 2304, 64), (4, 20, 576, 576, 64), (4, 5, 9216, 77, 64)]
TRAIN = [(1,) + shape[1:] for shape in SD21]


def naive(q, k, v):
    fa.enabled = False
    try:
        return scaled_dot_product_attention(q, k, v)
    finally:
        fa.enabled = True


def rel_err(x, ref):
    return float(np.abs(x.numpy().astype(np.float64) - ref).max() / np.abs(ref).max())


def measure(shape, dtype, warps, timing):
    b, h, nq, nk, d = shape
    rng = np.random.default_rng(0)
    q, k, v = (jt.array(rng.standard_normal((b, h, n, d)).astype(dtype)) for n in (nq, nk, nk))
    ref = naive(q.float32(), k.float32(), v.float32()).numpy().astype(np.float64)
    row = {"shape": list(shape), "dtype": dtype, "dispatch": fa.supported(q, k, v),
           "naive_err": rel_err(naive(q, k, v), ref)}
    variants = warps if dtype == "float16" and timing else [4]
    for w in variants:
        row[f"fused_w{w}_err"] = rel_err(fa.fused_attention(q, k, v, warps=w), ref)
    if timing:
        row["naive_ms"] = timed_ms(lambda: naive(q, k, v))
        for w in variants:
            row[f"fused_w{w}_ms"] = timed_ms(lambda: fa.fused_attention(q, k, v, warps=w))
    return row


def measure_backward(shape, dtype, timing):
    """Relative errors of (dq, dk, dv), fused and naive in ``dtype``, against naive float32; ms of forward+backward."""
    b, h, nq, nk, d = shape
    rng = np.random.default_rng(0)
    q, k, v = (jt.array(rng.standard_normal((b, h, n, d)).astype(dtype)) for n in (nq, nk, nk))
    weight = jt.array(rng.standard_normal((b, h, nq, d)).astype("float32"))

    def grads(attend, *x):
        return jt.grad((attend(*x).float32() * weight).sum(), list(x))

    ref = [g.numpy().astype(np.float64) for g in grads(naive, q.float32(), k.float32(), v.float32())]
    scale = max(np.abs(r).max() for r in ref)  # one key: dq and dk are exactly zero
    row = {"shape": list(shape), "dtype": dtype, "backward": True}
    for name, attend in (("naive", naive), ("fused", fa.fused_attention)):
        got = grads(attend, q, k, v)
        row[f"{name}_err"] = max(float(np.abs(g.numpy() - r).max() / scale) for g, r in zip(got, ref))
        if timing:
            row[f"{name}_ms"] = timed_ms(lambda: sum(g.float32().sum() for g in grads(attend, q, k, v)))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warps", type=int, nargs="+", default=[4], help="float16 kernel variants (16 queries a warp)")
    p.add_argument("--dtypes", nargs="+", default=["float16", "float32"])
    p.add_argument("--backward", action="store_true", help="gradients (training shapes, batch 1)")
    a = p.parse_args()
    device = gpu_name()
    if a.backward:
        for timing, shapes in ((False, CHECKS), (True, TRAIN)):
            for shape in shapes:
                for dtype in a.dtypes:
                    print(json.dumps({**measure_backward(shape, dtype, timing), "device": device}), flush=True)
        return
    with jt.no_grad():
        for timing, shapes in ((False, CHECKS), (True, SD21)):
            for shape in shapes:
                for dtype in a.dtypes:
                    print(json.dumps({**measure(shape, dtype, a.warps, timing), "device": device}), flush=True)


if __name__ == "__main__":
    main()
