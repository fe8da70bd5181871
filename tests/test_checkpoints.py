"""Per-style checkpoint files: layout, atomic refusing writes, LoRA / embedding round trips, trusted .bin."""
import numpy as np
import pytest

from styleblend.checkpoints import StyleCheckpoint
from styleblend.config import load_recipe
from styleblend.errors import ModelLoadError, StyleBlendError
from styleblend.sd.models.attention import Attention
from styleblend.sd.models.lora import add_lora, lora_state_dict

import jittor as jt  # noqa: E402  (after styleblend)
from jittor import nn  # noqa: E402


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention(8, heads=2, dim_head=4)

    def execute(self, x):
        return self.attn(x)


def test_layout_and_completeness(tmp_path):
    ckpt = StyleCheckpoint(tmp_path, "B", "07")
    assert ckpt.coarse_embeds == tmp_path / "B" / "07" / "coarse_embeds.safetensors"
    assert ckpt.unet_lora.name == "unet_lora.safetensors" and ckpt.config.name == "config.yaml"
    assert ckpt.sdedit_dir == tmp_path / "B" / "07" / "sdedit"
    assert not ckpt.exists("coarse") and not ckpt.is_complete()
    for kind in ("coarse_embeds", "text_encoder_lora", "fine_embeds"):
        ckpt.save_tensors(kind, {"x": np.zeros(2, np.float32)})
    assert ckpt.exists("coarse") and ckpt.exists("fine_embeds") and not ckpt.exists("fine")
    assert not ckpt.is_complete()
    ckpt.save_tensors("unet_lora", {"x": np.zeros(2, np.float32)})
    assert ckpt.is_complete()
    with pytest.raises(StyleBlendError, match="unknown checkpoint file kind"):
        ckpt.path("weights")


def test_writes_refuse_to_replace_unless_forced(tmp_path):
    ckpt = StyleCheckpoint(tmp_path, "B", "00")
    ckpt.save_embedding("fine_embeds", "<F>", "artistic", np.ones(4, np.float32))
    with pytest.raises(StyleBlendError, match="fine_embeds.safetensors"):
        ckpt.save_embedding("fine_embeds", "<F>", "artistic", np.zeros(4, np.float32))
    with pytest.raises(StyleBlendError, match="fine_embeds.safetensors"):
        ckpt.check_writable(["fine_embeds", "unet_lora"], force=False)
    ckpt.check_writable(["fine_embeds"], force=True)
    ckpt.save_embedding("fine_embeds", "<F>", "artistic", np.zeros(4, np.float32), force=True)
    token, row = ckpt.load_embedding("fine_embeds")
    assert token == "<F>"
    np.testing.assert_array_equal(row, np.zeros(4, np.float32))
    assert sorted(p.name for p in ckpt.folder.iterdir()) == ["fine_embeds.safetensors"]  # no temp files left


def test_lora_round_trip_adds_layers_and_reproduces_outputs(tmp_path):
    ckpt = StyleCheckpoint(tmp_path, "B", "00")
    trained = Tiny()
    add_lora(trained, ["to_q", "to_v", "to_out.0"], rank=2, alpha=4)
    for var in lora_state_dict(trained).values():
        var.assign(jt.array(np.random.default_rng(0).standard_normal(var.shape).astype(np.float32)))
    ckpt.save_lora("unet_lora", trained, ["to_q", "to_v", "to_out.0"])

    fresh = Tiny()
    fresh.load_state_dict({k: v for k, v in trained.state_dict().items() if "lora" not in k})
    x = jt.array(np.random.default_rng(1).standard_normal((1, 3, 8)).astype(np.float32))
    base = fresh(x).numpy()
    ckpt.load_lora("unet_lora", fresh)
    np.testing.assert_array_equal(fresh(x).numpy(), trained(x).numpy())
    assert not np.allclose(fresh(x).numpy(), base)
    ckpt.load_lora("unet_lora", fresh)  # again: reuses the layers
    assert len(lora_state_dict(fresh)) == len(lora_state_dict(trained))

    for targets, rank in ((["to_q", "to_v", "to_out.0"], 1), (["to_q"], 2)):  # another style's LoRA is replaced
        other = Tiny()
        other.load_state_dict({k: v for k, v in trained.state_dict().items() if "lora" not in k})
        add_lora(other, targets, rank=rank, alpha=1)
        ckpt.load_lora("unet_lora", other)
        np.testing.assert_array_equal(other(x).numpy(), trained(x).numpy())

    arrays, _ = ckpt.load_tensors("unet_lora")
    ckpt.save_tensors("unet_lora", {k: v[:1] for k, v in arrays.items()}, {"rank": "2", "alpha": "4",
                                                                          "targets": '["to_q"]'}, force=True)
    with pytest.raises(ModelLoadError, match="unet_lora.safetensors"):
        ckpt.load_lora("unet_lora", Tiny())


def test_config_sections_form_a_readable_partial_recipe(tmp_path):
    ckpt = StyleCheckpoint(tmp_path, "B", "00")
    ckpt.save_config_section("coarse", {"steps": 7}, seed=5)
    ckpt.save_config_section("fine", {"ti_steps": 9}, seed=5)
    recipe = load_recipe(ckpt.config)
    assert (recipe.seed, recipe.coarse.steps, recipe.fine.ti_steps) == (5, 7, 9)
