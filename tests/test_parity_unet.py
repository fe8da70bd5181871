"""Our Jittor UNet against diffusers' UNet2DConditionModel (PyTorch, CPU, fp32) on tiny random configs."""
import functools

import numpy as np
import pytest

import styleblend  # noqa: F401  (Jittor's flags first)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jittor as jt  # noqa: E402

from styleblend.errors import ConfigError  # noqa: E402
from styleblend.sd.models.resnet import GroupNorm  # noqa: E402
from styleblend.sd.models.transformer import LayerNorm  # noqa: E402
from styleblend.sd.models.unet import UNet2DConditionModel, resolve_unet_config  # noqa: E402

TOL = 1e-4
CROSS_DOWN, PLAIN_DOWN, CROSS_UP, PLAIN_UP = "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"
TINY = dict(block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8)

# name -> (config, batch, latent (h, w), text tokens, timesteps as given to our model)
CASES = {
    "head-list_linear_upcast_b2_8x16": (
        dict(TINY, down_block_types=[CROSS_DOWN, PLAIN_DOWN], up_block_types=[PLAIN_UP, CROSS_UP],
             attention_head_dim=[2, 4], cross_attention_dim=24, use_linear_projection=True, upcast_attention=True),
        2, (8, 16), 5, np.array([10, 700])),
    "head-int_conv-proj_wide-context": (
        dict(TINY, down_block_types=[CROSS_DOWN, CROSS_DOWN], up_block_types=[CROSS_UP, CROSS_UP],
             attention_head_dim=2, cross_attention_dim=40, use_linear_projection=False),
        1, (8, 8), 7, 999),
    "three-levels_odd-latents_deep-transformers": (
        dict(block_out_channels=[16, 16, 32], layers_per_block=[1, 2, 1], norm_num_groups=8,
             down_block_types=[CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN], up_block_types=[PLAIN_UP, CROSS_UP, CROSS_UP],
             attention_head_dim=[1, 2, 4], transformer_layers_per_block=2, cross_attention_dim=16,
             use_linear_projection=True, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0),
        3, (7, 9), 4, "jt"),
}
SD21 = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.8.0", "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": [CROSS_DOWN, CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN], "downsample_padding": 1,
    "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4, "sample_size": 96,
    "up_block_types": [PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP], "upcast_attention": True,
    "use_linear_projection": True,
}


def reference(config, seed=0):
    """diffusers' UNet with seeded weights; constant-initialised tensors (norms, biases) get noise too."""
    torch.manual_seed(seed)
    ref = diffusers.UNet2DConditionModel(**config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if torch.all(p == p.flatten()[0]):
                p.add_(0.2 * torch.randn_like(p))
    return ref


def load_into_ours(ref, config):
    ours = UNet2DConditionModel.from_config(config)
    theirs = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    mine = ours.state_dict()
    assert sorted(mine) == sorted(theirs)
    for key, value in theirs.items():
        assert tuple(mine[key].shape) == value.shape, key
    ours.load_state_dict(theirs)
    return ours


@functools.lru_cache(maxsize=None)
def case(name):
    """(ref, ours, latents, context, timesteps [B] numpy, timesteps as passed to ours, reference output)."""
    config, batch, (h, w), tokens, given = CASES[name]
    ref = reference(config)
    ours = load_into_ours(ref, config)
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((batch, 4, h, w)).astype(np.float32)
    context = rng.standard_normal((batch, tokens, config["cross_attention_dim"])).astype(np.float32)
    if isinstance(given, str):  # "jt": random steps, given to ours as a float32 Var [B]
        steps = rng.integers(0, 1000, batch)
        given = jt.array(steps.astype(np.float32))
    else:
        steps = np.full(batch, given)
    with torch.no_grad():
        expected = ref(torch.from_numpy(latents), torch.from_numpy(steps), torch.from_numpy(context)).sample.numpy()
    return ref, ours, latents, context, steps, given, expected


def run_ours(name, timesteps=None):
    _, ours, latents, context, _, given, _ = case(name)
    out = ours(jt.array(latents), given if timesteps is None else timesteps, jt.array(context))
    return out.numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_diffusers(name):
    *_, expected = case(name)
    out = run_ours(name)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= TOL


TIMESTEP_FORMS = {
    "int": lambda: 500, "float": lambda: 500.0, "numpy-int64": lambda: np.int64(500),
    "numpy-0d": lambda: np.array(500), "numpy-batch": lambda: np.array([500, 500]),
    "jt-0d": lambda: jt.array(np.float32(500)), "jt-batch-int": lambda: jt.array([500, 500]),
}


@pytest.mark.parametrize("form", list(TIMESTEP_FORMS))
def test_timestep_forms_broadcast(form):
    name = "head-list_linear_upcast_b2_8x16"
    ref, _, latents, context, *_ = case(name)
    with torch.no_grad():
        expected = ref(torch.from_numpy(latents), 500, torch.from_numpy(context)).sample.numpy()
    assert np.abs(run_ours(name, TIMESTEP_FORMS[form]()) - expected).max() <= TOL


def test_timestep_count_must_match_batch():
    with pytest.raises(ValueError, match="3 timesteps"):
        run_ours("head-list_linear_upcast_b2_8x16", np.array([1, 2, 3]))


def test_gradients_match_diffusers():
    """LoRA / textual-inversion training need correct gradients, w.r.t. weights and text states."""
    ref, ours, latents, context, steps, given, _ = case("head-list_linear_upcast_b2_8x16")
    names = ["conv_in.weight", "time_embedding.linear_1.weight",
             "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
             "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
             "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj.weight",
             "up_blocks.1.resnets.1.norm2.weight"]
    weights = np.random.default_rng(2).standard_normal((2, 4, 8, 16)).astype(np.float32)

    ctx_t = torch.from_numpy(context).requires_grad_(True)
    out_t = ref(torch.from_numpy(latents), torch.from_numpy(steps), ctx_t).sample
    params_t = dict(ref.named_parameters())
    grads_t = torch.autograd.grad((out_t * torch.from_numpy(weights)).sum(), [ctx_t] + [params_t[n] for n in names])

    params = ours.state_dict()
    ctx = jt.array(context)
    loss = (ours(jt.array(latents), given, ctx) * jt.array(weights)).sum()
    grads = jt.grad(loss, [ctx] + [params[n] for n in names])
    for label, g, g_ref in zip(["context"] + names, grads, grads_t):
        g_ref = g_ref.numpy()
        assert np.abs(g_ref).max() > 1e-3, label  # the gradient is not trivially zero
        assert np.abs(g.numpy() - g_ref).max() <= TOL * max(1.0, np.abs(g_ref).max()), label


@pytest.mark.parametrize("param", ["mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight",
                                   "up_blocks.1.resnets.0.norm2.bias",
                                   "time_embedding.linear_2.weight"])
def test_mutation_is_detected(param):
    """The comparison is sensitive: one changed weight of ours breaks it."""
    name = "head-list_linear_upcast_b2_8x16"
    *_, expected = case(name)
    var = case(name)[1].state_dict()[param]
    original = var.numpy().copy()
    mutated = original.copy()
    mutated.flat[0] += 0.5
    var.assign(jt.array(mutated))
    try:
        assert np.abs(run_ours(name) - expected).max() > 1e-3
    finally:
        var.assign(jt.array(original))
    assert np.abs(run_ours(name) - expected).max() <= TOL


def test_transformer_blocks_order():
    config = dict(block_out_channels=[8, 8, 16, 16], layers_per_block=2, norm_num_groups=8,
                  attention_head_dim=[1, 2, 4, 4], cross_attention_dim=12)
    unet = UNet2DConditionModel.from_config(config)
    modules = dict(unet.named_modules())
    expected = ([f"down_blocks.{b}.attentions.{a}" for b in range(3) for a in range(2)] + ["mid_block.attentions.0"]
                + [f"up_blocks.{b}.attentions.{a}" for b in range(1, 4) for a in range(3)])
    blocks = unet.transformer_blocks()
    assert len(blocks) == 16
    assert [id(b) for b in blocks] == [id(modules[f"{n}.transformer_blocks.0"]) for n in expected]
    assert [b.attn1.heads for b in blocks] == [1] * 2 + [2] * 2 + [4] * 2 + [4] + [4] * 3 + [2] * 3 + [1] * 3
    assert not any(b.attn1.is_cross_attention for b in blocks)
    assert all(b.attn2.is_cross_attention and b.attn2.to_k.weight.shape[1] == 12 for b in blocks)


def test_sd21_config_builds_diffusers_layout():
    """The real SD 2.1 config (and diffusers' full re-saved form) gives diffusers' exact parameter layout."""
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**{k: v for k, v in SD21.items() if not k.startswith("_")})
    full = dict(ref.config)
    for config in (SD21, full):
        unet = UNet2DConditionModel.from_config(config)
        assert unet.config["sample_size"] == 96 and unet.config["upcast_attention"] is True
        shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
        assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    blocks = unet.transformer_blocks()
    assert len(blocks) == 16
    assert [b.attn1.heads for b in blocks] == [5, 5, 10, 10, 20, 20, 20, 20, 20, 20, 10, 10, 10, 5, 5, 5]
    assert all(b.attn1.to_q.weight.shape[0] // b.attn1.heads == 64 for b in blocks)


@pytest.mark.parametrize("change, key", [
    ({"addition_embed_type": "text_time"}, "addition_embed_type"),
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
    ({"time_embedding_dim": 512}, "time_embedding_dim"),
    ({"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}, "mid_block_type"),
    ({"down_block_types": [CROSS_DOWN, "SimpleCrossAttnDownBlock2D", CROSS_DOWN, PLAIN_DOWN]}, "down_block_types"),
    ({"up_block_types": [PLAIN_UP, CROSS_UP, CROSS_UP]}, "up_block_types"),
    ({"attention_head_dim": [5, 10, 20]}, "attention_head_dim"),
])
def test_unsupported_config_raises(change, key):
    with pytest.raises(ConfigError, match=key):
        resolve_unet_config({**SD21, **change})


def test_neutral_unknown_keys_are_accepted():
    cfg = resolve_unet_config({**SD21, "class_embed_type": None, "encoder_hid_dim": None, "num_class_embeds": None})
    assert "_class_name" not in cfg and cfg["cross_attention_dim"] == 1024


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_norms_compute_in_float32_for_float16(norm):
    """Large-mean fp16 activations: E[x²] would overflow float16; our norms match the float32 result."""
    x = (300 + np.random.default_rng(3).standard_normal((2, 16, 4, 4))).astype(np.float16).astype(np.float32)
    if norm == "group":
        layer = GroupNorm(4, 16)
    else:
        layer, x = LayerNorm(16), x.reshape(2, 16, 16)
    exact = layer(jt.array(x)).numpy()
    layer.float16()
    out = layer(jt.array(x).float16())
    assert out.dtype == jt.float16 and layer.weight.dtype == jt.float16
    assert np.abs(out.numpy().astype(np.float32) - exact).max() < 2e-3
