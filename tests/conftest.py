"""Shared test setup: Jittor's flags come from ``styleblend`` (imported first), quiet progress bars."""
import os

import pytest

os.environ.setdefault("STYLEBLEND_QUIET", "1")

# Jittor configured for this machine, with the default SIGCHLD handling that nbval's kernel shutdown needs
import styleblend.backend  # noqa: E402,F401


@pytest.fixture
def lora_unet(tmp_path):
    """``make(batch) -> (unet, lora_params, x, context)``: the tiny UNet with a rank-4 LoRA whose factors are all
    non-zero (LoRA's up-projection starts at zero; here every factor gets a gradient) and seeded inputs."""
    import numpy as np
    import jittor as jt

    from styleblend.sd import loading
    from styleblend.config import load_recipe
    from styleblend.sd.models.lora import add_lora, lora_parameters

    def make(batch: int):
        unet = loading.load_sd(loading.write_tiny_sd(tmp_path / "tiny-sd", seed=0)).unet
        add_lora(unet, load_recipe(smoke=True).fine.lora_targets, 4, 4)
        params = lora_parameters(unet)
        for i, p in enumerate(params):
            p.assign(jt.array(np.random.default_rng(i).standard_normal(p.shape).astype("float32") * 0.1))
        rng = np.random.default_rng(0)
        x = jt.array(rng.standard_normal((batch, 4, 8, 8)).astype("float32"))
        context = jt.array(rng.standard_normal((batch, 77, unet.config["cross_attention_dim"])).astype("float32"))
        return unet, params, x, context

    return make
