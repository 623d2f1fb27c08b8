import keras
import numpy as np
import pytest

from causal_lm_helpers import MOVIE_TITLES, tiny_causal_tokenizer, tiny_generative_model
from marc_keras.generative.beam_search_decoder import BeamSearchDecoder
from marc_keras.generative.cached_decoding_model import CachedDecodingModel
from marc_keras.generative.title_prompts import TitlePrompts
from marc_keras.generative.title_trie import TitleTrie

HISTORIES = [("1",), ("2", "3", "6"), ("5",)]


@pytest.fixture
def setup():
    tokenizer = tiny_causal_tokenizer()
    model = tiny_generative_model(tokenizer, seed=3)
    for variable in model.trainable_variables:
        # Non-zero LoRA factors, so that the merged copy has something to merge.
        variable.assign(np.random.default_rng(1).normal(size=variable.shape) * 0.2)
    return model, TitlePrompts(tokenizer, MOVIE_TITLES)


def _log_probs(model, sequence):
    ids = np.array([sequence], "int32")
    hidden = model.lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    logits = keras.ops.convert_to_numpy(model.lm.token_embedding(hidden, reverse=True))[0]
    logits = logits.astype("float64")
    return (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - (logits.max(1, keepdims=True))
    )


def test_ragged_prefill_and_steps_match_full_forward_passes(setup):
    model, prompts = setup
    prompt_ids = prompts.prompt_ids(HISTORIES)
    assert len({len(ids) for ids in prompt_ids}) == 3
    stepper = CachedDecodingModel(model, max_new_tokens=4, eos_id=prompts.eos_id)
    logits, state = stepper.prefill(prompt_ids)
    for row, ids in enumerate(prompt_ids):
        expected = _log_probs(model, ids)[-1]
        actual = logits[row] - np.log(np.exp(logits[row].astype("float64")).sum())
        np.testing.assert_allclose(actual, expected, atol=1e-5)
    # Beam-style reordering: rows repeat and drop, and two steps in a row.
    rows, tokens = np.array([2, 0, 0]), np.array([7, 8, 9])
    logits, state = stepper.step(state, rows, tokens)
    logits, state = stepper.step(state, np.array([1, 2]), np.array([11, 12]))
    histories = [prompt_ids[0] + [8, 11], prompt_ids[0] + [9, 12]]
    for row, sequence in enumerate(histories):
        actual = logits[row] - np.log(np.exp(logits[row].astype("float64")).sum())
        np.testing.assert_allclose(actual, _log_probs(model, sequence)[-1], atol=1e-5)


def test_merged_copy_computes_the_same_states(setup):
    model, prompts = setup
    tokens = prompts.prompt_arrays(HISTORIES)
    merged = model.merged()
    assert merged.backbone.lora_rank == 0 and not merged.trainable_weights
    np.testing.assert_allclose(merged.prompt_states(tokens), model.prompt_states(tokens), atol=1e-5)


def test_beam_wider_than_the_catalogue_ranks_like_exhaustive_scoring(setup):
    model, prompts = setup
    trie = TitleTrie(prompts.title_sequences, prompts.eos_id)
    stepper = CachedDecodingModel(model.merged(), trie.depth, prompts.eos_id)
    decoder = BeamSearchDecoder(stepper, trie, beam_width=len(prompts.title_texts) + 2)
    prompt_ids = prompts.prompt_ids(HISTORIES)
    results = decoder.decode(prompt_ids)
    for ids, result in zip(prompt_ids, results):
        exhaustive = {}
        for group, title in enumerate(prompts.title_sequences):
            log_probs = _log_probs(model, ids + title + [prompts.eos_id])
            steps = title + [prompts.eos_id]
            exhaustive[group] = sum(
                log_probs[len(ids) - 1 + offset, token] for offset, token in enumerate(steps)
            )
        order = sorted(exhaustive, key=lambda group: -exhaustive[group])
        assert [trie.titles_at(leaf)[0] for leaf, _ in result] == order
        np.testing.assert_allclose(
            [score for _, score in result], [exhaustive[group] for group in order], atol=1e-4
        )


def test_a_full_cache_is_an_error(setup):
    model, prompts = setup
    stepper = CachedDecodingModel(model, max_new_tokens=1, eos_id=prompts.eos_id)
    _, state = stepper.prefill(prompts.prompt_ids(HISTORIES[:1]))
    _, state = stepper.step(state, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="raise max_new_tokens"):
        stepper.step(state, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        CachedDecodingModel(model, max_new_tokens=0, eos_id=0)
