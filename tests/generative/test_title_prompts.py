import numpy as np
import pytest

from causal_lm_helpers import MOVIE_TITLES, tiny_causal_tokenizer
from marc_keras.generative.title_prompts import PromptTemplate, TitlePrompts, right_padded


@pytest.fixture
def prompts():
    return TitlePrompts(tiny_causal_tokenizer(), MOVIE_TITLES)


def test_prompt_is_bigrec_alpaca_format():
    text = PromptTemplate().render(["Heat (1995)", "Fargo (1996)"])
    assert text.startswith("Below is an instruction that describes a task")
    assert "### Instruction:\nGiven a list of movies the user has watched before" in text
    assert '### Input:\nThe user has watched the following movies before: "Heat (1995)", ' in text
    assert text.endswith('"Fargo (1996)"\n\n### Response:\n')


def test_prompt_and_target_are_tokenized_apart_and_joined(prompts):
    arrays = prompts.training_arrays([("1", "6"), ("2",)], ["3", "5"])
    for row, (history, target) in enumerate([(("1", "6"), "3"), (("2",), "5")]):
        (prompt,) = prompts.prompt_ids([history])
        title = prompts.tokenizer.encode_ids([f'"{MOVIE_TITLES[target]}"'], False)[0]
        expected = prompt + title + [prompts.eos_id]
        length = int(arrays["padding_mask"][row].sum())
        assert arrays["token_ids"][row, :length].tolist() == expected
        count = int(arrays["target_mask"][row].sum())
        assert arrays["target_ids"][row, :count].tolist() == title + [prompts.eos_id]
        # Position t predicts token t + 1: the first is the last prompt token.
        positions = arrays["target_positions"][row, :count]
        assert positions[0] == len(prompt) - 1
        assert arrays["token_ids"][row, positions + 1].tolist() == title + [prompts.eos_id]
    assert arrays["target_mask"][0].sum() < arrays["target_mask"].shape[1]  # a padded target


def test_equal_titles_share_one_target(prompts):
    heat = prompts.title_texts.index("Heat (1995)")
    assert sorted(prompts.group_items[heat]) == prompts.item_indices(["1", "4"]).tolist()
    assert prompts.target_ids(["1"]) == prompts.target_ids(["4"])
    assert len(prompts.title_sequences) == len(set(MOVIE_TITLES.values()))


def test_oldest_titles_are_dropped_until_the_prompt_fits():
    full = TitlePrompts(tiny_causal_tokenizer(max_length=400), MOVIE_TITLES)
    history = ("1", "2", "3", "6")
    (whole,) = full.prompt_ids([history])
    (without_oldest,) = full.prompt_ids([history[1:]])
    short = TitlePrompts(tiny_causal_tokenizer(max_length=len(whole) - 1), MOVIE_TITLES)
    assert short.prompt_ids([history]) == [without_oldest]
    tiny = TitlePrompts(tiny_causal_tokenizer(max_length=20), MOVIE_TITLES)
    with pytest.raises(ValueError, match="raise model.max_length"):
        tiny.prompt_ids([history])


def test_unknown_items_and_empty_catalogue_are_errors(prompts):
    with pytest.raises(ValueError, match="Item '99' is not in the catalogue"):
        prompts.training_arrays([("1",)], ["99"])
    with pytest.raises(ValueError, match="titles is empty"):
        TitlePrompts(tiny_causal_tokenizer(), {})


def test_right_padded():
    arrays = right_padded([[5, 6, 7], [8]], pad_id=0)
    np.testing.assert_array_equal(arrays["token_ids"], [[5, 6, 7], [8, 0, 0]])
    np.testing.assert_array_equal(arrays["padding_mask"], [[1, 1, 1], [1, 0, 0]])
