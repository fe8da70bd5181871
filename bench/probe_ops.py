"""Where does a Jittor UNet step go? Times one conv, one attention and one GroupNorm at SD 2.1's 768² sizes,
and says whether Jittor found cuDNN / cuBLAS (run on the GPU machine with STYLEBLEND_DEVICE=cuda).

GroupNorm: the package's (fused kernels on CUDA; plain ops with STYLEBLEND_FUSED_GROUPNORM=0); bench/group_norm.py
compares the two in detail."""
import json

import numpy as np

from styleblend.runtime import start

jt = start(0)
from jittor import compile_extern, nn  # noqa: E402

from styleblend.sd.models.attention import scaled_dot_product_attention  # noqa: E402
from styleblend.sd.models.resnet import GroupNorm  # noqa: E402
from unet_step import timed_ms  # noqa: E402  (bench/ is the script's folder)

out = {"cudnn": compile_extern.cudnn is not None, "cublas": compile_extern.cublas is not None}
for dtype in ("float32", "float16"):
    conv = nn.Conv2d(320, 320, 3, padding=1)
    if dtype == "float16":
        conv.float16()
    x = jt.array(np.random.randn(4, 320, 96, 96).astype(dtype))
    out[f"conv320_96_{dtype}_ms"] = timed_ms(lambda: conv(x))
    q = jt.array(np.random.randn(4, 5, 9216, 64).astype(dtype))
    out[f"attn_9216_{dtype}_ms"] = timed_ms(lambda: scaled_dot_product_attention(q, q, q))
    gn = GroupNorm(32, 320)
    out[f"groupnorm_320_96_{dtype}_ms"] = timed_ms(lambda: gn(x))
    lin = nn.Linear(320, 320)
    if dtype == "float16":
        lin.float16()
    h = jt.array(np.random.randn(4, 9216, 320).astype(dtype))
    out[f"linear_{dtype}_ms"] = timed_ms(lambda: lin(h))
print(json.dumps(out))
