"""DDIMScheduler against diffusers' DDIMScheduler / DDPMScheduler on random arrays.

Jittor compiles its kernels with ``-Ofast`` (reciprocal division), so results agree with torch to float32
rounding: |ours - diffusers| <= 1e-6 * (1 + |diffusers|) (1e-6 absolute for values of order one).
"""
import itertools

import numpy as np
import pytest
import torch

from styleblend.errors import ConfigError
from styleblend.sd.schedulers import DDIMScheduler

import jittor as jt  # noqa: E402  (after styleblend)
from diffusers import DDIMScheduler as RefDDIM, DDPMScheduler as RefDDPM  # noqa: E402

SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SD21_PNDM = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.10.0", **SD, "clip_sample": False,
             "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
             "steps_offset": 1, "trained_betas": None}


def assert_close(ours: jt.Var, ref: torch.Tensor):
    ref = ref.numpy()
    err = np.abs(ours.numpy() - ref)
    assert (err <= 1e-6 * (1 + np.abs(ref))).all(), f"max abs diff {err.max():.3g}"


def pair(**config):
    return DDIMScheduler.from_config(config), RefDDIM.from_config(config)


@pytest.mark.parametrize("spacing,steps_offset,set_alpha_to_one",
                         list(itertools.product(["leading", "trailing", "linspace"], [0, 1], [True, False])))
def test_ddim_steps_equal_diffusers(spacing, steps_offset, set_alpha_to_one):
    rng = np.random.default_rng(steps_offset)
    for prediction, clip, eta in itertools.product(["epsilon", "v_prediction", "sample"], [False, True], [0.0, 0.6]):
        ours, ref = pair(**SD, timestep_spacing=spacing, steps_offset=steps_offset, prediction_type=prediction,
                         set_alpha_to_one=set_alpha_to_one, clip_sample=clip, clip_sample_range=1.5)
        ours.set_timesteps(7)
        ref.set_timesteps(7)
        np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
        assert ours.timesteps.dtype == np.int64
        for t in ours.timesteps:
            x, out, noise = rng.standard_normal((3, 2, 4, 5, 5), dtype=np.float32)
            got = ours.step(jt.array(out), t, jt.array(x), eta=eta, noise=jt.array(noise))
            want = ref.step(torch.from_numpy(out), int(t), torch.from_numpy(x), eta=eta,
                            variance_noise=torch.from_numpy(noise))
            assert_close(got.prev_sample, want.prev_sample)
            assert_close(got.pred_original_sample, want.pred_original_sample)


def test_eta_without_noise_draws_fresh_noise():
    ours = DDIMScheduler.from_config(SD)
    ours.set_timesteps(5)
    x, out = jt.ones((1, 4, 2, 2)), jt.zeros((1, 4, 2, 2))
    t = ours.timesteps[1]
    a, b = (ours.step(out, t, x, eta=1.0).prev_sample.numpy() for _ in range(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(ours.step(out, t, x).prev_sample.numpy(), ours.step(out, t, x).prev_sample.numpy())


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_forward_process_equals_ddpm(prediction):
    ours, ref = DDIMScheduler.from_config(SD21_PNDM), RefDDPM.from_config(SD21_PNDM)
    rng = np.random.default_rng(1)
    x0, noise = rng.standard_normal((2, 4, 4, 6, 6), dtype=np.float32)
    tx0, tnoise = torch.from_numpy(x0), torch.from_numpy(noise)
    per_sample = np.array([0, 17, 500, 999], dtype=np.int64)
    for t in (999, 1, per_sample):
        tt = torch.tensor(t).reshape(-1)
        assert_close(ours.add_noise(jt.array(x0), jt.array(noise), t), ref.add_noise(tx0, tnoise, tt))
        assert_close(ours.get_velocity(jt.array(x0), jt.array(noise), t), ref.get_velocity(tx0, tnoise, tt))
    ours = DDIMScheduler.from_config({**SD21_PNDM, "prediction_type": prediction})
    xt = ours.add_noise(jt.array(x0), jt.array(noise), per_sample)
    target = ours.training_target(jt.array(x0), jt.array(noise), per_sample)
    expected = {"epsilon": noise, "sample": x0,
                "v_prediction": ref.get_velocity(tx0, tnoise, torch.from_numpy(per_sample)).numpy()}[prediction]
    np.testing.assert_allclose(target.numpy(), expected, atol=1e-6)
    # the exact target recovers x0 from x_t at every per-sample timestep
    np.testing.assert_allclose(ours.predict_x0(target, per_sample, xt).numpy(), x0, atol=2e-4)


def test_predict_x0_matches_step_without_clipping():
    ours, ref = pair(**SD, prediction_type="v_prediction", clip_sample=False)
    ref.set_timesteps(10)
    rng = np.random.default_rng(2)
    x, out = rng.standard_normal((2, 1, 4, 3, 3), dtype=np.float32)
    want = ref.step(torch.from_numpy(out), 801, torch.from_numpy(x)).pred_original_sample
    assert_close(ours.predict_x0(jt.array(out), 801, jt.array(x)), want)


def test_from_config_accepts_sd_scheduler_configs():
    euler = {**SD21_PNDM, "_class_name": "EulerDiscreteScheduler", "interpolation_type": "linear",
             "use_karras_sigmas": False, "timestep_spacing": "trailing"}
    for config in (SD21_PNDM, euler):
        ours, ref = DDIMScheduler.from_config(config), RefDDIM.from_config(config)
        ours.set_timesteps(20)
        ref.set_timesteps(20)
        np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
        assert ours.config["prediction_type"] == "v_prediction" and ours.config["steps_offset"] == 1
        np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("key,value", [("rescale_betas_zero_snr", True), ("thresholding", True),
                                       ("trained_betas", [0.1, 0.2]), ("beta_schedule", "squaredcos_cap_v2"),
                                       ("prediction_type", "flow"), ("timestep_spacing", "karras")])
def test_unsupported_config_values_raise(key, value):
    with pytest.raises(ConfigError, match=key):
        DDIMScheduler.from_config({**SD, key: value})


def test_set_timesteps_rejects_too_many_steps():
    with pytest.raises(ConfigError, match="1001"):
        DDIMScheduler.from_config(SD).set_timesteps(1001)


def test_sample_timesteps_uniform_and_seeded():
    ours = DDIMScheduler.from_config({**SD, "num_train_timesteps": 50})
    draws = ours.sample_timesteps(5000, np.random.default_rng(3))
    assert draws.dtype == np.int64 and draws.shape == (5000,)
    assert draws.min() == 0 and draws.max() == 49
    assert np.abs(np.bincount(draws, minlength=50) - 100).max() < 45
    np.testing.assert_array_equal(ours.sample_timesteps(8, np.random.default_rng(3)), draws[:8])


def test_the_model_folder_names_its_sampler(monkeypatch):
    from styleblend.sd import schedulers

    class Other(schedulers.DDIMScheduler):
        pass

    monkeypatch.setitem(schedulers.SCHEDULERS, "OtherScheduler", Other)
    config = {"beta_schedule": "scaled_linear", "prediction_type": "v_prediction"}
    assert type(schedulers.scheduler_from_config({**config, "_class_name": "OtherScheduler"})) is Other
    for name in ("DDIMScheduler", "PNDMScheduler", None):  # a sampler this package lacks: DDIM, as the original
        assert type(schedulers.scheduler_from_config({**config, "_class_name": name})) is schedulers.DDIMScheduler
