"""CLIPTextModel against transformers' (torch, CPU, float32) on tiny random configs; token rows, clone, LoRA."""
import json
from pathlib import Path

import numpy as np
import pytest

from styleblend.errors import ConfigError
from styleblend.sd.models.lora import add_lora, lora_layers
from styleblend.sd.models.text_encoder import CLIPTextModel

import jittor as jt  # noqa: E402  (after styleblend: Jittor's flags)
import torch  # noqa: E402
import transformers  # noqa: E402

SD21 = Path(__file__).resolve().parents[1] / "styleblend" / "configs" / "sd21" / "text_encoder" / "config.json"
TOL = 1e-4
VOCAB, TOKENS = 64, 77


def tiny_config(act: str) -> dict:
    return {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": TOKENS, "hidden_act": act,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "projection_dim": 16}


def numpy_state(module):
    """transformers 5 drops the ``text_model.`` prefix that the saved SD files (and our names) carry."""
    return {f"text_model.{name}": value.detach().numpy() for name, value in module.state_dict().items()}


def build_pair(act: str):
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(**tiny_config(act))
    ref = transformers.CLIPTextModel(config).eval()
    ours = CLIPTextModel.from_config(config.to_diff_dict())
    ours.load_state_dict(numpy_state(ref))
    return ref, ours


@pytest.fixture(scope="module", params=["gelu", "quick_gelu"])
def pair(request):
    return build_pair(request.param)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, VOCAB, (2, TOKENS))


def reference_hidden(ref, ids):
    with torch.no_grad():
        return ref(torch.from_numpy(ids)).last_hidden_state.numpy()


def test_parameter_names_and_shapes_match_transformers(pair):
    ref, ours = pair
    assert {n: tuple(v.shape) for n, v in ours.state_dict().items()} == \
        {n: v.shape for n, v in numpy_state(ref).items()}


def test_last_hidden_state_matches_transformers(pair, ids):
    ref, ours = pair
    got = ours(jt.array(ids)).numpy()
    assert got.shape == (2, TOKENS, 32)
    np.testing.assert_allclose(got, reference_hidden(ref, ids), rtol=0, atol=TOL)


def test_gradients_match_transformers(pair, ids):
    ref, ours = pair
    probe = np.random.default_rng(1).standard_normal((2, TOKENS, 32)).astype(np.float32)
    ref.zero_grad()
    (ref(torch.from_numpy(ids)).last_hidden_state * torch.from_numpy(probe)).sum().backward()
    loss = (ours(jt.array(ids)) * jt.array(probe)).sum()
    q_proj = ours.text_model.encoder.layers[0].self_attn.q_proj.weight
    got = jt.grad(loss, [ours.token_embedding_weight, q_proj])
    expected = [ref.embeddings.token_embedding.weight.grad, ref.encoder.layers[0].self_attn.q_proj.weight.grad]
    for grad, want in zip(got, expected):  # sums over many tokens: tolerance relative to the gradient's scale
        want = want.numpy()
        np.testing.assert_allclose(grad.numpy(), want, rtol=0, atol=TOL * np.abs(want).max())


def test_causal_mask_hides_later_tokens(pair, ids):
    _, ours = pair
    changed = ids.copy()
    changed[:, 40:] = (changed[:, 40:] + 1) % VOCAB
    before, after = ours(jt.array(ids)).numpy(), ours(jt.array(changed)).numpy()
    np.testing.assert_allclose(after[:, :40], before[:, :40], rtol=0, atol=1e-6)
    assert np.abs(after[:, 40:] - before[:, 40:]).max() > 1e-3


def test_perturbed_weight_breaks_parity(ids):
    ref, ours = build_pair("gelu")
    weight = ours.text_model.encoder.layers[1].mlp.fc2.weight
    changed = weight.numpy()
    changed[3, 5] += 0.05
    weight.assign(jt.array(changed))
    assert np.abs(ours(jt.array(ids)).numpy() - reference_hidden(ref, ids)).max() > 1e-3


def test_add_token_rows_copies_init_rows_and_keeps_old_outputs(ids):
    _, te = build_pair("gelu")
    before = te(jt.array(ids)).numpy()
    new = te.add_token_rows([5, 9])
    table = te.token_embedding_weight.numpy()
    assert new == [VOCAB, VOCAB + 1] and table.shape == (VOCAB + 2, 32) and te.config["vocab_size"] == VOCAB + 2
    np.testing.assert_array_equal(table[new], table[[5, 9]])
    np.testing.assert_array_equal(te(jt.array(ids)).numpy(), before)
    swapped = ids.copy()
    swapped[ids == 5] = VOCAB
    assert (ids == 5).any()
    np.testing.assert_allclose(te(jt.array(swapped)).numpy(), before, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        te.add_token_rows([VOCAB + 2])


def with_new_row(ids):
    """(a text encoder with one new token row, that row's id, ``ids`` with the token at position 4)."""
    _, te = build_pair("quick_gelu")
    (row,) = te.add_token_rows([3])
    prompt = ids.copy()
    prompt[:, 4] = row
    return te, row, prompt


def test_new_row_trains_alone(ids):
    te, row, prompt = with_new_row(ids)
    grad = jt.grad(te(jt.array(prompt)).sqr().sum(), te.token_embedding_weight).numpy()
    assert np.abs(grad[row]).max() > 0
    used = np.zeros(len(grad), bool)
    used[np.unique(prompt)] = True
    assert not grad[~used].any()


def test_trainable_row_is_the_table_row_with_its_own_gradient(ids):
    te, new, prompt = with_new_row(ids)
    table_grad = jt.grad(te(jt.array(prompt)).sqr().sum(), te.token_embedding_weight).numpy()
    before = te(jt.array(prompt)).numpy()
    with te.trainable_row(new) as row:
        np.testing.assert_array_equal(te(jt.array(prompt)).numpy(), before)
        row_grad = jt.grad(te(jt.array(prompt)).sqr().sum(), row).numpy()
        row.assign(row + jt.array(np.random.default_rng(0).standard_normal(row.shape).astype(np.float32)))
        moved = te(jt.array(prompt)).numpy()
    np.testing.assert_allclose(row_grad, table_grad[new], rtol=1e-5, atol=1e-6)
    table = te.token_embedding_weight.numpy()
    np.testing.assert_array_equal(table[new], row.numpy())
    np.testing.assert_allclose(te(jt.array(prompt)).numpy(), moved, rtol=0, atol=1e-5)  # now read from the table
    assert np.abs(moved - before).max() > 1e-3
    with pytest.raises(ValueError, match="token id 99 is outside the vocabulary"):
        with te.trainable_row(99):
            pass


def test_clone_is_independent(ids):
    _, te = build_pair("gelu")
    twin = te.clone()
    np.testing.assert_array_equal(twin(jt.array(ids)).numpy(), te(jt.array(ids)).numpy())
    before = te(jt.array(ids)).numpy()
    for weight in (twin.token_embedding_weight, twin.text_model.encoder.layers[0].self_attn.v_proj.weight):
        weight.assign(weight * 2.0)
    twin.add_token_rows([1])
    np.testing.assert_array_equal(te(jt.array(ids)).numpy(), before)
    assert te.token_embedding_weight.shape[0] == VOCAB and te.config["vocab_size"] == VOCAB
    assert np.abs(twin(jt.array(ids)).numpy() - before).max() > 1e-3


def test_lora_wraps_projections_and_trains(ids):
    _, te = build_pair("gelu")
    before = te(jt.array(ids)).numpy()
    wrapped = add_lora(te, ["q_proj", "k_proj", "v_proj", "out_proj"], rank=2, alpha=2.0)
    assert len(wrapped) == 2 * 4 and "text_model.encoder.layers.1.self_attn.out_proj" in wrapped
    np.testing.assert_allclose(te(jt.array(ids)).numpy(), before, rtol=0, atol=1e-6)
    ups = [layer.lora_up.weight for layer in lora_layers(te).values()]
    grads = jt.grad(te(jt.array(ids)).sqr().sum(), ups)
    assert all(np.abs(g.numpy()).max() > 0 for g in grads)
    assert sorted(lora_layers(te.clone())) == sorted(lora_layers(te))


def test_float16_weights_stay_close(ids):
    _, te = build_pair("gelu")
    expected = te(jt.array(ids)).numpy()
    te.float16()
    got = te(jt.array(ids))
    assert got.dtype == "float16"
    np.testing.assert_allclose(got.numpy().astype(np.float32), expected, rtol=0, atol=2e-2)


def test_sd21_config_builds_transformers_names_and_shapes():
    config = json.loads(SD21.read_text())
    with torch.device("meta"):
        ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config))
    ours = CLIPTextModel.from_config(config)
    assert ours.config["num_hidden_layers"] == 23 and ours.config["hidden_act"] == "gelu"
    assert {n: tuple(v.shape) for n, v in ours.state_dict().items()} == \
        {f"text_model.{n}": tuple(v.shape) for n, v in ref.state_dict().items()}


@pytest.mark.parametrize("change, named", [
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"attention_dropout": 0.1}, "attention_dropout"),
    ({"num_key_value_heads": 2}, "num_key_value_heads"),
    ({"num_attention_heads": 5}, "num_attention_heads"),
])
def test_unsupported_config_raises_config_error(change, named):
    with pytest.raises(ConfigError, match=named):
        CLIPTextModel.from_config({**tiny_config("gelu"), **change})
