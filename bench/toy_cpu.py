"""The toy model's heavy CPU paths, timed: VAE encoding and decoding and one pretraining step (text encoder + UNet),
batch 16 at 64², and the kernels one pretraining step launches (Jittor's profiler; on a GPU, where each launch
costs about the same whatever its work, the toy step's time follows that count). Run it with and without oneDNN to
see what it gives (styleblend/onednn.py):

    python bench/toy_cpu.py                 # oneDNN, where its wheels are installed (the default)
    use_mkl=0 python bench/toy_cpu.py       # Jittor's own kernels
Prints one JSON line: seconds per call (the best of 3 after a warm-up; a training step the mean of 3) and
``train_step_kernels``.
"""
from __future__ import annotations

import json
import time

import numpy as np

from styleblend.runtime import start


def best_of(fn, n: int = 3) -> float:
    fn()  # compiles
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(min(times), 3)


def kernels(jt, fn) -> int:
    """How many kernels ``fn()`` launches."""
    jt.sync_all(True)
    jt.profiler.start(0, 0)
    fn()
    jt.sync_all(True)
    jt.profiler.stop()
    head, *rows = jt.profiler.report()
    return sum(int(row[head.index("Count")]) for row in rows)


def main() -> None:
    jt = start(0)
    import jittor.compile_extern as extern
    from styleblend.sd.loading import load_sd, resolve_model
    from styleblend.sd.sampling import encode_prompt, to_tensor
    from styleblend.toyworld import pretraining_pairs
    from styleblend.training import denoising_loss, encode_moments, fit, sample_latents

    sd = load_sd(resolve_model("toy"))
    images, captions = zip(*pretraining_pairs(16, 0, 64))
    x = to_tensor(list(images), 64)
    result = {"onednn": extern.mkl_ops is not None, "batch": 16, "size": 64}
    with jt.no_grad():
        latents = sd.vae.encode(x).mean
        result["vae_encode_s"] = best_of(lambda: sd.vae.encode(x).mean.sync())
        result["vae_decode_s"] = best_of(lambda: sd.vae.decode(latents).sync())
    rng = np.random.default_rng(0)
    moments = encode_moments(sd, list(images), 64)
    params = list(sd.unet.parameters()) + list(sd.text_encoder.parameters())

    def loss_at(step: int):
        return denoising_loss(sd, sample_latents(sd, moments, rng), encode_prompt(sd, list(captions)), rng)

    fit(params, loss_at, 2, 1e-4, (0.9, 0.999), 0.0, 1e-8, desc="warm-up")
    t0 = time.perf_counter()
    fit(params, loss_at, 3, 1e-4, (0.9, 0.999), 0.0, 1e-8, desc="timed")
    result["train_step_s"] = round((time.perf_counter() - t0) / 3, 3)
    result["train_step_kernels"] = kernels(jt, lambda: fit(params, loss_at, 1, 1e-4, (0.9, 0.999), 0.0, 1e-8,
                                                           desc="counted"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
