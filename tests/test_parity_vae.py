"""AutoencoderKL against diffusers' (torch, CPU, float32) on a tiny random config: names, encode, decode."""
import json
from pathlib import Path

import numpy as np
import pytest

from styleblend.errors import ConfigError
from styleblend.sd.models.vae import AutoencoderKL

import jittor as jt  # noqa: E402  (after styleblend: Jittor's flags)
import torch  # noqa: E402
from diffusers import AutoencoderKL as RefAutoencoderKL  # noqa: E402

SD21 = Path(__file__).resolve().parents[1] / "styleblend" / "configs" / "sd21" / "vae" / "config.json"
TINY = {
    "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 4,
}
TOL = 1e-4


def numpy_state(module):
    return {name: value.detach().numpy() for name, value in module.state_dict().items()}


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = RefAutoencoderKL(**TINY).eval()
    ours = AutoencoderKL.from_config(dict(ref.config))
    ours.load_state_dict(numpy_state(ref))
    return ref, ours


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 48)).astype(np.float32)


def test_parameter_names_and_shapes_match_diffusers(pair):
    ref, ours = pair
    expected = {name: tuple(v.shape) for name, v in ref.state_dict().items()}
    assert {name: tuple(v.shape) for name, v in ours.state_dict().items()} == expected
    assert "encoder.mid_block.attentions.0.group_norm.weight" in expected


def test_sd21_config_builds_diffusers_names_and_shapes():
    config = json.loads(SD21.read_text())
    with torch.device("meta"):
        ref = RefAutoencoderKL.from_config(config)
    ours = AutoencoderKL.from_config(config)
    assert {n: tuple(v.shape) for n, v in ours.state_dict().items()} == \
        {n: tuple(v.shape) for n, v in ref.state_dict().items()}
    assert ours.config["scaling_factor"] == 0.18215


def test_encode_matches_diffusers(pair, images):
    ref, ours = pair
    with torch.no_grad():
        expected = ref.encode(torch.from_numpy(images)).latent_dist
    got = ours.encode(jt.array(images))
    assert got.mean.shape == [2, 4, 16, 24]
    for name in ("mean", "logvar", "std"):
        np.testing.assert_allclose(getattr(got, name).numpy(), getattr(expected, name).numpy(), rtol=0, atol=TOL)


def test_decode_matches_diffusers(pair):
    ref, ours = pair
    latents = np.random.default_rng(1).standard_normal((2, 4, 16, 24)).astype(np.float32)
    with torch.no_grad():
        expected = ref.decode(torch.from_numpy(latents)).sample.numpy()
    got = ours.decode(jt.array(latents)).numpy()
    assert got.shape == (2, 3, 32, 48)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_sample_uses_given_noise_else_draws(pair, images):
    posterior = pair[1].encode(jt.array(images))
    noise = np.random.default_rng(2).standard_normal(posterior.mean.shape).astype(np.float32)
    expected = posterior.mean.numpy() + posterior.std.numpy() * noise
    np.testing.assert_allclose(posterior.sample(jt.array(noise)).numpy(), expected, rtol=1e-6, atol=1e-6)
    drawn = posterior.sample().numpy()
    assert drawn.shape == expected.shape and not np.allclose(drawn, posterior.mean.numpy())


def test_perturbed_weight_breaks_parity(pair, images):
    ref, _ = pair
    state = numpy_state(ref)
    state["encoder.mid_block.attentions.0.to_v.weight"] = state["encoder.mid_block.attentions.0.to_v.weight"] + 0.05
    mutant = AutoencoderKL.from_config(dict(ref.config))
    mutant.load_state_dict(state)
    with torch.no_grad():
        expected = ref.encode(torch.from_numpy(images)).latent_dist.mean.numpy()
    assert np.abs(mutant.encode(jt.array(images)).mean.numpy() - expected).max() > 1e-3


@pytest.mark.parametrize("change, named", [
    ({"norm_type": "spatial"}, "norm_type"),
    ({"act_fn": "relu"}, "act_fn"),
    ({"mid_block_add_attention": False}, "mid_block_add_attention"),
    ({"down_block_types": ["AttnDownEncoderBlock2D", "DownEncoderBlock2D"]}, "down_block_types"),
    ({"up_block_types": ["UpDecoderBlock2D"]}, "up_block_types"),
    ({"norm_num_groups": 3}, "norm_num_groups"),
])
def test_unsupported_config_raises_config_error(change, named):
    with pytest.raises(ConfigError, match=named):
        AutoencoderKL.from_config({**TINY, **change})


def test_metadata_and_neutral_keys_are_accepted():
    vae = AutoencoderKL.from_config({**TINY, "_class_name": "AutoencoderKL", "force_upcast": False,
                                     "sample_size": [32, 48], "some_future_flag": None})
    assert vae.config["force_upcast"] is False and "_class_name" not in vae.config
