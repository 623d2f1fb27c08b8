import hashlib

import numpy as np
import pytest
from test_beam_search_decoder import EOS, HashModel

from marc_keras.generative.greedy_grounding_decoder import GreedyGroundingDecoder

PROMPTS = [[20, 21], [30], [40, 41, 42, 43], [50, 51, 52], [60, 61]]
MAX_NEW_TOKENS = 6
TITLES = [[3], [3, 5], [4, 1, 2, 9], [7, 7], [3, 5], [9, 8, 1], [2], [11, 4, 6]]


def _embed_one(tokens):
    """A fixed random 4-vector per token sequence."""
    digest = hashlib.blake2b(np.asarray(tokens, dtype=np.int64).tobytes(), digest_size=8)
    return np.random.default_rng(int.from_bytes(digest.digest(), "little")).normal(size=4)


class RecordingEmbed:
    def __init__(self):
        self.calls = []

    def __call__(self, sequences):
        self.calls.append([list(tokens) for tokens in sequences])
        return np.stack([_embed_one(tokens) for tokens in sequences]).astype("float32")


def _greedy(model, prompt, max_new_tokens):
    """Argmax of the fake LM until end-of-text or max_new_tokens; also says how it stopped."""
    history, generated = list(prompt), []
    for _ in range(max_new_tokens):
        token = int(np.argmax(model.logits_for(history)))
        if token == EOS:
            return generated, True
        generated.append(token)
        history.append(token)
    return generated, False


@pytest.mark.parametrize(("salt", "eos_bias"), [(0, 0.0), (1, 0.0), (3, 0.0), (11, 1.0)])
def test_generation_is_a_batched_argmax_loop(salt, eos_bias):
    model = HashModel(eos_bias=eos_bias, salt=salt)
    expected = [_greedy(model, prompt, MAX_NEW_TOKENS) for prompt in PROMPTS]
    decoder = GreedyGroundingDecoder(model, RecordingEmbed(), TITLES, MAX_NEW_TOKENS)
    generated = decoder.generate(PROMPTS)
    assert generated == [tokens for tokens, _ in expected]
    assert all(EOS not in tokens and len(tokens) <= MAX_NEW_TOKENS for tokens in generated)
    # A prompt is fed back once per token it generated, and not after its last
    # allowed token; one step call serves every live prompt.
    feeds = [len(tokens) if ended else MAX_NEW_TOKENS - 1 for tokens, ended in expected]
    assert sum(model.step_rows) == sum(feeds)
    assert len(model.step_rows) == max(feeds)
    # One prompt at a time gives the same tokens.
    for prompt, tokens in zip(PROMPTS, generated):
        alone = GreedyGroundingDecoder(HashModel(eos_bias, salt), RecordingEmbed(), TITLES, 6)
        assert alone.generate([prompt]) == [tokens]


def test_the_cases_cover_end_of_text_first_and_the_length_limit():
    stops = {
        (salt, eos_bias): [
            _greedy(HashModel(eos_bias, salt), prompt, MAX_NEW_TOKENS) for prompt in PROMPTS
        ]
        for salt, eos_bias in [(0, 0.0), (1, 0.0), (3, 0.0), (11, 1.0)]
    }
    lengths = [(len(tokens), ended) for cases in stops.values() for tokens, ended in cases]
    assert (0, True) in lengths  # end-of-text first
    assert (MAX_NEW_TOKENS, False) in lengths  # cut off
    assert (MAX_NEW_TOKENS - 1, True) in lengths  # end-of-text as the last allowed token
    assert any(0 < length < MAX_NEW_TOKENS - 1 and ended for length, ended in lengths)


@pytest.mark.parametrize("salt", [0, 1, 11])
def test_titles_rank_by_euclidean_distance_to_the_generation(salt):
    model = HashModel(eos_bias=1.0 if salt == 11 else 0.0, salt=salt)
    expected_tokens = [_greedy(model, prompt, MAX_NEW_TOKENS)[0] for prompt in PROMPTS]
    # One generation is a real title (the last catalogue entry).
    titles = [*TITLES, next(tokens for tokens in expected_tokens if tokens)]
    embed = RecordingEmbed()
    decoder = GreedyGroundingDecoder(model, embed, titles, MAX_NEW_TOKENS, batch_size=4)
    # The title index is embedded in batches of four, in catalogue order.
    assert embed.calls == [titles[0:4], titles[4:8], titles[8:9]]
    embed.calls.clear()

    generated, ranked = decoder.decode(PROMPTS, top_k=5)
    assert generated == expected_tokens
    # An empty generation is embedded as [eos].
    assert embed.calls == [[tokens or [EOS] for tokens in expected_tokens]]
    assert ranked.shape == (len(PROMPTS), 5) and ranked.dtype == np.int64
    title_vectors = [_embed_one(title).astype("float32") for title in titles]
    for tokens, row in zip(expected_tokens, ranked):
        query = _embed_one(tokens or [EOS]).astype("float32").astype("float64")
        distances = [np.linalg.norm(query - vector) for vector in title_vectors]
        order = np.argsort(distances, kind="stable")
        assert row.tolist() == order[:5].tolist()
    # A generation that is a title is its own nearest title.
    exact = [index for index, tokens in enumerate(generated) if decoder.is_title(tokens)]
    assert exact and all(ranked[index, 0] == 8 for index in exact)
    # top_k beyond the catalogue ranks every title once; the duplicate [3, 5]
    # (indices 1 and 4) ties and keeps catalogue order.
    _, everything = decoder.decode(PROMPTS, top_k=100)
    assert everything.shape == (len(PROMPTS), len(titles))
    assert all(sorted(row) == list(range(len(titles))) for row in everything.tolist())
    assert all(row.index(1) + 1 == row.index(4) for row in everything.tolist())


def test_is_title():
    decoder = GreedyGroundingDecoder(HashModel(), RecordingEmbed(), TITLES, MAX_NEW_TOKENS)
    assert decoder.is_title([4, 1, 2, 9]) and decoder.is_title((3, 5)) and decoder.is_title([3])
    assert not decoder.is_title([4, 1, 2])  # a prefix
    assert not decoder.is_title([3, 5, 0])  # with end-of-text
    assert not decoder.is_title([])
