"""Fused vs plain GroupNorm on CUDA at SD 2.1's 768² sizes: max relative error and ms per call.

    STYLEBLEND_DEVICE=cuda python bench/group_norm.py [--dtypes float16 float32]

One JSON line per (shape, dtype): the plain path's and the fused kernels' time for the forward (inference) and for
forward + backward (training: gradients of input, weight and bias), and the fused results' max |x − ref| / max |ref|
against the plain GroupNorm computed in float32 from the same inputs (output, and each of the three gradients).
Odd shapes (a pixel count that is not a multiple of the block, one pixel, 5-D) are checked first, untimed.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from styleblend.runtime import start

jt = start(0)
from styleblend.sd.models import fused_group_norm as fgn  # noqa: E402
from styleblend.sd.models.resnet import GroupNorm  # noqa: E402
from unet_step import gpu_name, timed_ms  # noqa: E402  (bench/ is the script's folder)

CHECKS = [(2, 64, 7, 9), (3, 32, 1, 1), (1, 64, 3, 5, 7)]
UNET = [(b, c, s, s) for b in (1, 4) for c, s in ((320, 96), (640, 48), (1280, 24), (1280, 12))]
VAE = [(1, 512, 96, 96), (1, 512, 384, 384), (1, 256, 768, 768), (1, 128, 768, 768)]


def plain(gn, x):
    fgn.enabled = False
    try:
        return gn(x)
    finally:
        fgn.enabled = True


def rel_err(x, ref):
    """max |x − ref| / max |ref|; absolute where ref is all zero (one value per group: dx = dweight = 0)."""
    return float(np.abs(x.numpy().astype(np.float64) - ref).max() / (np.abs(ref).max() or 1.0))


def measure(shape, dtype, timing):
    rng = np.random.default_rng(0)
    gn = GroupNorm(32, shape[1], 1e-5)
    gn.weight.assign(jt.array(rng.standard_normal(shape[1]).astype("float32")))
    gn.bias.assign(jt.array(rng.standard_normal(shape[1]).astype("float32")))
    x = jt.array((rng.standard_normal(shape) + 0.5).astype(dtype))
    dy = jt.array(rng.standard_normal(shape).astype("float32"))

    def grads(norm, v):
        return jt.grad((norm(v).float32() * dy).sum(), [v, gn.weight, gn.bias])

    xf = x.float32()
    ref = [plain(gn, xf).numpy().astype(np.float64)] + [g.numpy().astype(np.float64) for g in grads(
        lambda v: plain(gn, v), xf)]
    fused = lambda v: fgn.fused_group_norm(v, gn.weight, gn.bias, 32, gn.eps)  # noqa: E731
    got = [fused(x)] + list(grads(fused, x))
    row = {"shape": list(shape), "dtype": dtype, "dispatch": fgn.supported(x)}
    row.update({f"{name}_err": rel_err(g, r) for name, g, r in zip(("out", "dx", "dweight", "dbias"), got, ref)})
    if timing:
        row["plain_ms"] = timed_ms(lambda: plain(gn, x))
        row["fused_ms"] = timed_ms(lambda: fused(x))
        row["plain_grad_ms"] = timed_ms(lambda: sum(g.sum() for g in grads(lambda v: plain(gn, v), x)))
        row["fused_grad_ms"] = timed_ms(lambda: sum(g.sum() for g in grads(fused, x)))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtypes", nargs="+", default=["float16", "float32"], choices=["float16", "float32"])
    a = p.parse_args()
    print(json.dumps({"device": gpu_name(), "cuda": bool(jt.flags.use_cuda)}))
    for shape in CHECKS:
        for dtype in a.dtypes:
            print(json.dumps(measure(shape, dtype, timing=False)))
    for shape in UNET + VAE:
        for dtype in a.dtypes:
            print(json.dumps(measure(shape, dtype, timing=True)))


if __name__ == "__main__":
    main()
