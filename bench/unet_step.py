"""UNet step time and peak GPU memory: our Jittor SD 2.1 UNet vs diffusers on PyTorch, same config and batch.

One measurement per process (Jittor needs numpy<2, the GPU machine's PyTorch numpy 2):
    python bench/unet_step.py --impl jittor --dtype float16      # STYLEBLEND_DEVICE=cuda, after make gpu-setup
    python bench/unet_step.py --impl diffusers --dtype float16
prints one JSON line: impl, dtype, batch, latent, ms_per_step, peak_gpu_mb, device name.
Full-size SD 2.1 architecture from styleblend/configs/sd21/unet/config.json with random weights: timings are
valid, outputs are noise. Batch 4 = StyleBlend's [uncond CSB, uncond FSB, cond CSB, cond FSB]; 96² latents = 768².
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from styleblend.memory import gpu_used_mb

CONFIG = Path(__file__).resolve().parents[1] / "styleblend" / "configs" / "sd21" / "unet" / "config.json"


def gpu_name() -> str:
    """The first GPU's name, or "cpu" where there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.strip().splitlines()[0]


def timed_ms(fn, n=10):
    """Mean milliseconds of ``fn()`` (a Jittor op) over ``n`` calls after 2 warm-ups, synchronised."""
    import jittor as jt

    for _ in range(2):
        fn().sync()
    jt.sync_all(True)
    t0 = time.perf_counter()
    for _ in range(n):
        fn().sync()
    jt.sync_all(True)
    return round((time.perf_counter() - t0) * 1000 / n, 3)


def levers() -> dict:
    """Which of the package's fused kernels are on (``STYLEBLEND_FUSED_*``); Jittor runs only."""
    from styleblend.sd.models import fused_attention, fused_group_norm

    return {"fused_attention": fused_attention.enabled, "fused_backward": fused_attention.backward_enabled,
            "fused_group_norm": fused_group_norm.enabled}


def jittor_memory(jt, top: int = 4) -> dict:
    """After a run under ``jt.flags.profile_memory_enable = 1``: the most memory Jittor's live variables held at
    once (MiB) and the ``top`` largest of them then, as [MiB, "var"]. Beside nvidia-smi's peak, the rest is
    Jittor's allocator cache, the CUDA context and the libraries' workspaces."""
    parts = jt.get_max_memory_info().split("[!@#div1!@#]")
    rows = [part.split("[!@#div2!@#]") for part in parts[1:top + 1]]
    return {"jittor_live_peak_mb": round(int(parts[0]) / 2**20),
            "jittor_largest_vars": [[round(int(r[1]) / 2**20), var_label(r[0])] for r in rows]}


def var_label(text: str) -> str:
    """``Var(14530:1:1:1:i0:o0:s1:n0:g1,float32,,7fbd…)[49410,32,]`` → ``float32[49410,32]``."""
    match = re.match(r"Var\([^,]*,(\w+),.*\)\[(.*)\]", text)
    return f"{match[1]}[{match[2].rstrip(',')}]" if match else text[:60]


class GpuPeak:
    """Peak of nvidia-smi's used memory while the block runs (includes the framework's cache)."""

    def __enter__(self):
        self.peak, self._stop = 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            used = gpu_used_mb()
            if used is not None:
                self.peak = max(self.peak, used)
            self._stop.wait(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def diffusers_config(folder: Path) -> dict:
    """A model folder's config.json (or scheduler_config.json) without diffusers' private ``_`` keys."""
    path = next(folder.glob("*config.json"))
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def bench_jittor(dtype: str, batch: int, latent: int, steps: int) -> float:
    import numpy as np

    from styleblend.runtime import start
    jt = start(0)
    from styleblend.sd.models.unet import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(json.loads(CONFIG.read_text()))
    if dtype == "float16":
        unet.float16()
    unet.eval()
    cfg = unet.config
    x = jt.array(np.random.randn(batch, cfg["in_channels"], latent, latent).astype(dtype))
    ctx = jt.array(np.random.randn(batch, 77, cfg["cross_attention_dim"]).astype(dtype))
    with jt.no_grad():
        for i in range(steps + 2):
            if i == 2:
                jt.sync_all(True)
                t0 = time.perf_counter()
            out = unet(x, 500, ctx)
            out.sync()
        jt.sync_all(True)
    return (time.perf_counter() - t0) * 1000 / steps


def bench_diffusers(dtype: str, batch: int, latent: int, steps: int) -> float:
    import torch
    from diffusers import UNet2DConditionModel

    cfg = diffusers_config(CONFIG.parent)
    tdtype = getattr(torch, dtype)
    unet = UNet2DConditionModel.from_config(cfg).to("cuda", tdtype).eval()
    x = torch.randn(batch, cfg["in_channels"], latent, latent, device="cuda", dtype=tdtype)
    ctx = torch.randn(batch, 77, cfg["cross_attention_dim"], device="cuda", dtype=tdtype)
    with torch.no_grad():
        for i in range(steps + 2):
            if i == 2:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            unet(x, 500, ctx)
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000 / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=["jittor", "diffusers"], required=True)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--latent", type=int, default=96)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    run = bench_jittor if a.impl == "jittor" else bench_diffusers
    with GpuPeak() as peak:
        ms = run(a.dtype, a.batch, a.latent, a.steps)
    print(json.dumps({"impl": a.impl, "dtype": a.dtype, "batch": a.batch, "latent": a.latent,
                      "ms_per_step": round(ms, 2), "peak_gpu_mb": peak.peak, "device": gpu_name(),
                      **(levers() if a.impl == "jittor" else {})}))


if __name__ == "__main__":
    main()
