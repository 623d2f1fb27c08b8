import numpy as np
import pytest

import marc_keras


def test_pads_right_to_the_longest_or_to_max_length(tiny_tokenizer):
    batch = tiny_tokenizer(["the movie", "user likes the action movie"])
    np.testing.assert_array_equal(batch["padding_mask"], [[1, 1, 1, 1, 0, 0, 0], [1] * 7])
    assert batch["token_ids"][0, 4] == tiny_tokenizer.pad_id
    fixed = tiny_tokenizer(["the movie"], pad_to_max_length=True)
    assert fixed["token_ids"].shape == (1, 12) and fixed["token_ids"].dtype == np.int32


def test_long_texts_are_truncated_and_counted(tiny_tokenizer):
    batch = tiny_tokenizer(["the movie " * 20, "a film"])
    assert batch["token_ids"].shape == (2, 12)
    assert tiny_tokenizer.last_truncated == 1


def test_empty_text_gives_only_special_tokens(tiny_tokenizer):
    batch = tiny_tokenizer([""])
    np.testing.assert_array_equal(batch["token_ids"], [[2, 3]])


def test_non_strings_are_refused_with_their_index(tiny_tokenizer):
    with pytest.raises(TypeError, match="Text 1 is NoneType"):
        tiny_tokenizer(["ok", None])
    with pytest.raises(ValueError, match="empty list"):
        tiny_tokenizer([])


def test_json_round_trip(tiny_tokenizer):
    clone = marc_keras.TextTokenizer.from_json(tiny_tokenizer.to_json(), max_length=12)
    texts = ["user likes comedy", "the horror film"]
    np.testing.assert_array_equal(clone(texts)["token_ids"], tiny_tokenizer(texts)["token_ids"])


def test_minilm_tokenizer_matches_transformers(minilm_path):
    from transformers import AutoTokenizer

    texts = ["Amélie (2001). Genres: Comedy, Romance.", ""]
    ours = marc_keras.TextTokenizer.from_preset(minilm_path, max_length=64)(texts)
    theirs = AutoTokenizer.from_pretrained(str(minilm_path), local_files_only=True)(
        texts, padding=True
    )
    np.testing.assert_array_equal(ours["token_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["padding_mask"], theirs["attention_mask"])


def test_missing_tokenizer_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        marc_keras.TextTokenizer.from_preset(tmp_path / "nope")
    with pytest.raises(ValueError, match="No tokenizer could be loaded"):
        marc_keras.TextTokenizer.from_preset(tmp_path)
