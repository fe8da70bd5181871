"""Where does a Jittor UNet step go? Times one conv, one attention and one GroupNorm at SD 2.1's 768² sizes,
and says whether Jittor found cuDNN / cuBLAS (run on the GPU machine with STYLEBLEND_DEVICE=cuda).

GroupNorm is also timed with its gradient, at batch 1 (training) and 4 (inference), beside a candidate that
reduces each group in two stages (along the image rows, then across them): Jittor's profile of a training step
showed ≈ 0.4 ms per GroupNorm reduction kernel (docs/performance.md), which suggests one GPU thread per group.
``groupnorm_two_stage_max_diff`` is the candidate's largest difference from the package's GroupNorm."""
import json

import numpy as np

from styleblend.runtime import start

jt = start(0)
from jittor import compile_extern, nn  # noqa: E402

from styleblend.models.attention import scaled_dot_product_attention  # noqa: E402
from styleblend.models.resnet import GroupNorm  # noqa: E402
from unet_step import timed_ms  # noqa: E402  (bench/ is the script's folder)


def two_stage_group_norm(gn: GroupNorm, x: jt.Var) -> jt.Var:
    """The package's GroupNorm with each group's mean and variance reduced in two stages."""
    b, c, _, w = x.shape
    h = x.float32().reshape(b, gn.num_groups, -1, w)
    mean = h.mean(dim=-1, keepdims=True).mean(dim=-2, keepdims=True)
    centered = h - mean
    var = (centered * centered).mean(dim=-1, keepdims=True).mean(dim=-2, keepdims=True)
    h = (centered / jt.sqrt(var + gn.eps)).reshape(x.shape)
    return (h * gn.weight.float32().reshape(1, c, 1, 1) + gn.bias.float32().reshape(1, c, 1, 1)).cast(x.dtype)


def group_norm_rows(dtype: str) -> dict:
    """Forward and forward + input gradient of both GroupNorms at 320 channels, 96², batch 1 and 4."""
    gn, rows = GroupNorm(32, 320), {}
    for batch in (1, 4):
        x = jt.array(np.random.randn(batch, 320, 96, 96).astype(dtype))
        for name, norm in (("groupnorm", gn), ("groupnorm_two_stage", lambda v: two_stage_group_norm(gn, v))):
            rows[f"{name}_b{batch}_{dtype}_ms"] = timed_ms(lambda: norm(x))
            rows[f"{name}_grad_b{batch}_{dtype}_ms"] = timed_ms(lambda: jt.grad(norm(x).float32().sum(), x))
        rows[f"groupnorm_two_stage_max_diff_b{batch}_{dtype}"] = float(
            (gn(x).float32() - two_stage_group_norm(gn, x).float32()).abs().max())
    return rows


out = {"cudnn": compile_extern.cudnn is not None, "cublas": compile_extern.cublas is not None}
for dtype in ("float32", "float16"):
    conv = nn.Conv2d(320, 320, 3, padding=1)
    if dtype == "float16":
        conv.float16()
    x = jt.array(np.random.randn(4, 320, 96, 96).astype(dtype))
    out[f"conv320_96_{dtype}_ms"] = timed_ms(lambda: conv(x))
    q = jt.array(np.random.randn(4, 5, 9216, 64).astype(dtype))
    out[f"attn_9216_{dtype}_ms"] = timed_ms(lambda: scaled_dot_product_attention(q, q, q))
    out.update(group_norm_rows(dtype))
    lin = nn.Linear(320, 320)
    if dtype == "float16":
        lin.float16()
    h = jt.array(np.random.randn(4, 9216, 320).astype(dtype))
    out[f"linear_{dtype}_ms"] = timed_ms(lambda: lin(h))
print(json.dumps(out))
