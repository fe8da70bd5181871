"""New tokens: tokenizer entry, one embedding row copied from the init token, nearest words."""
import numpy as np
import pytest

from styleblend.sd import loading
from styleblend.errors import StyleBlendError
from styleblend.sd.tokens import add_token, nearest_tokens, set_token_row, token_id


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return loading.load_sd(loading.write_tiny_sd(tmp_path_factory.mktemp("tokens") / "tiny-sd", seed=0))


def table(text_encoder):
    return text_encoder.token_embedding_weight.numpy()


def test_add_token_appends_one_row_copied_from_the_init_token(sd):
    te = sd.text_encoder.clone()
    before = table(te)
    new_id = add_token(sd.tokenizer, te, "<T1>", "&")
    after = table(te)
    assert new_id == before.shape[0] == after.shape[0] - 1
    assert sd.tokenizer.encode("a <T1> b", add_special_tokens=False)[1] == new_id
    np.testing.assert_array_equal(after[:-1], before)
    np.testing.assert_array_equal(after[new_id], before[token_id(sd.tokenizer, "&")])
    assert add_token(sd.tokenizer, te, "<T1>", "&") == new_id  # again: same id, no new row
    assert table(te).shape == after.shape


def test_add_token_grows_past_rows_of_other_encoders(sd):
    te_a, te_b = sd.text_encoder.clone(), sd.text_encoder.clone()
    id_a = add_token(sd.tokenizer, te_a, "<T2>", "&")
    id_b = add_token(sd.tokenizer, te_b, "<T3>", "artistic")
    assert id_b > id_a and table(te_b).shape[0] == id_b + 1
    np.testing.assert_array_equal(table(te_b)[id_b], table(te_b)[token_id(sd.tokenizer, "artistic")])


def test_add_token_refuses_multi_token_init_and_vocabulary_words(sd):
    te = sd.text_encoder.clone()
    with pytest.raises(StyleBlendError, match="single-token"):
        add_token(sd.tokenizer, te, "<T4>", "two words")
    for word in ("cat", "artistic"):  # "artistic" is only in the vocabulary as "artistic</w>"
        with pytest.raises(StyleBlendError, match="already a word"):
            add_token(sd.tokenizer, te, word, "&")
    assert "artistic" not in sd.tokenizer.get_added_vocab()


def test_set_token_row_installs_a_saved_embedding(sd):
    te = sd.text_encoder.clone()
    row = np.linspace(-1, 1, table(te).shape[1]).astype(np.float32)
    new_id = set_token_row(sd.tokenizer, te, "<T5>", row)
    np.testing.assert_array_equal(table(te)[new_id], row)
    with pytest.raises(StyleBlendError, match="shape"):
        set_token_row(sd.tokenizer, te, "<T5>", row[:3])


def test_nearest_tokens_finds_the_init_word(sd):
    te = sd.text_encoder.clone()
    new_id = add_token(sd.tokenizer, te, "<T6>", "artistic")
    found = nearest_tokens(te, sd.tokenizer, new_id, k=4)
    assert len(found) == 4
    assert found[0][0] == "artistic" and found[0][1] == pytest.approx(1.0)
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True) and scores[1] < 1.0
