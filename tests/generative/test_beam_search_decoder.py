import hashlib

import numpy as np
import pytest

from marc_keras.generative.beam_search_decoder import BeamSearchDecoder
from marc_keras.generative.title_trie import TitleTrie

EOS = 0
VOCABULARY = 12

# Titles share prefixes, one is a prefix of others, and 1 and 6 tokenise alike.
TINY_TITLES = [[3], [3, 5], [3, 5, 7], [3, 6], [4, 1, 2, 9], [4, 1], [3, 5], [8, 2, 2]]
PROMPTS = [[20, 21], [30], [40, 41, 42, 43], [50, 51, 52]]


class HashModel:
    """A deterministic stand-in LM: each full token history gets its own random logits.

    Records the rows of every step call, to check batching and early stops.
    """

    def __init__(self, eos_bias=0.0, salt=0, mask_token=None):
        self.eos_id = EOS
        self.eos_bias = eos_bias
        self.salt = salt
        self.mask_token = mask_token
        self.step_rows = []

    def logits_for(self, history):
        # Hash the bytes, not the ints: seeding with the int list would make
        # [1] and [1, 0] collide (SeedSequence pads entropy with zeros).
        digest = hashlib.blake2b(np.asarray([self.salt, *history], dtype=np.int64).tobytes())
        rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "little"))
        logits = rng.normal(size=VOCABULARY) * 3
        logits[EOS] += self.eos_bias
        if self.mask_token is not None:
            logits[self.mask_token] = -np.inf
        return logits.astype(np.float32)

    def prefill(self, prompts):
        state = [tuple(prompt) for prompt in prompts]
        return np.stack([self.logits_for(history) for history in state]), state

    def step(self, state, rows, tokens):
        assert len(rows) == len(tokens)
        self.step_rows.append(len(rows))
        state = [state[row] + (int(token),) for row, token in zip(rows, tokens)]
        return np.stack([self.logits_for(history) for history in state]), state


def _log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max()
    return logits - peak - np.log(np.exp(logits - peak).sum())


def _title_score(model, prompt, title):
    history, score = list(prompt), 0.0
    for token in [*title, EOS]:
        score += _log_softmax(model.logits_for(history))[token]
        history.append(token)
    return score


def _reference_beam_search(model, trie, prompt, width, max_steps, length_penalty=0.0):
    """One prompt, plain Python, no early stop: runs until no live hypothesis is left.

    Live beams compete on the summed log-probability, finished titles on the
    sum divided by their length (eos included) to the power `length_penalty`.
    """
    live, finished = [((), 0.0, trie.root)], []
    for _ in range(max_steps):
        candidates = []
        for tokens, score, node in live:
            log_prob = _log_softmax(model.logits_for([*prompt, *tokens]))
            for token in trie.allowed(node).tolist():
                candidates.append(
                    (tokens + (token,), score + log_prob[token], trie.child(node, token))
                )
        finished += [
            (tokens, score / len(tokens) ** length_penalty, node)
            for tokens, score, node in candidates
            if tokens[-1] == EOS
        ]
        finished = sorted(finished, key=lambda c: -c[1])[:width]
        live = sorted([c for c in candidates if c[0][-1] != EOS], key=lambda c: -c[1])[:width]
        if not live:
            break
    return [(node, score) for _, score, node in finished]


def _random_titles(count, seed, longest=6):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(1, VOCABULARY, size=rng.integers(1, longest + 1)).tolist()
        for _ in range(count)
    ]


def _assert_same_results(actual, expected):
    assert [[leaf for leaf, _ in hyps] for hyps in actual] == [
        [leaf for leaf, _ in hyps] for hyps in expected
    ]
    for got, want in zip(actual, expected):
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-9)


def test_results_are_valid_distinct_titles_best_first():
    trie = TitleTrie(_random_titles(40, seed=1), eos_id=EOS)
    decoder = BeamSearchDecoder(HashModel(), trie, beam_width=5)
    results = decoder.decode(PROMPTS)
    assert len(results) == len(PROMPTS)
    for hyps in results:
        assert len(hyps) == 5
        leaves = [leaf for leaf, _ in hyps]
        assert len(set(leaves)) == len(leaves)
        assert all(trie.is_leaf(leaf) and trie.contains(trie.tokens_at(leaf)) for leaf in leaves)
        scores = [score for _, score in hyps]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(score, float) and score < 0 for score in scores)


@pytest.mark.parametrize(("width", "length_penalty"), [(7, 0.0), (10, 0.0), (7, 1.0), (7, 0.5)])
def test_a_beam_as_wide_as_the_catalogue_ranks_every_title_exhaustively(width, length_penalty):
    model = HashModel()
    trie = TitleTrie(TINY_TITLES, eos_id=EOS)
    assert len(trie.leaves()) == 7
    decoder = BeamSearchDecoder(model, trie, beam_width=width, length_penalty=length_penalty)
    results = decoder.decode(PROMPTS)
    distinct = {tuple(title): index for index, title in enumerate(TINY_TITLES)}
    for prompt, hyps in zip(PROMPTS, results):
        # Length normalised by hand: title tokens plus eos.
        expected = sorted(
            (
                (title, _title_score(model, prompt, title) / (len(title) + 1) ** length_penalty)
                for title in distinct
            ),
            key=lambda pair: -pair[1],
        )
        got = [(tuple(trie.tokens_at(leaf)[:-1]), score) for leaf, score in hyps]
        assert [title for title, _ in got] == [title for title, _ in expected]
        np.testing.assert_allclose(
            [score for _, score in got], [score for _, score in expected], rtol=0, atol=1e-5
        )
        # The duplicate title comes back once, standing for both catalogue items.
        assert (1, 6) in [trie.titles_at(leaf) for leaf, _ in hyps]


def test_batched_decoding_equals_decoding_each_prompt_alone():
    trie = TitleTrie(_random_titles(50, seed=2), eos_id=EOS)
    batched_model = HashModel(eos_bias=2.0)
    batched = BeamSearchDecoder(batched_model, trie, beam_width=4)
    together = batched.decode(PROMPTS)
    alone, steps, rows = [], [], 0
    for prompt in PROMPTS:
        decoder = BeamSearchDecoder(HashModel(eos_bias=2.0), trie, beam_width=4)
        alone.append(decoder.decode([prompt])[0])
        steps.append(decoder.last_steps)
        rows += decoder.last_step_rows
    _assert_same_results(together, alone)
    # One step call per step for all prompts, and a prompt that is done sends
    # no rows: the batched run costs what the single runs cost together.
    assert batched.last_steps == max(steps) == len(batched_model.step_rows)
    assert batched.last_step_rows == rows == sum(batched_model.step_rows)
    assert len(set(steps)) > 1  # the prompts really stop at different steps


@pytest.mark.parametrize(
    ("width", "eos_bias", "seed", "length_penalty"),
    [(1, 0.0, 3, 0.0), (3, 0.0, 4, 0.0), (2, 4.0, 5, 0.0), (3, 0.0, 7, 1.0), (2, 4.0, 8, 1.0)],
)
def test_early_stopping_is_exact(width, eos_bias, seed, length_penalty):
    model = HashModel(eos_bias=eos_bias, salt=seed)
    titles = _random_titles(60, seed=seed, longest=8)
    if eos_bias:
        # Short titles, likely to end, and one long title that can never catch up.
        titles = [*_random_titles(30, seed=seed, longest=3), [7, 7, 7, 7, 7, 7, 7, 7]]
    trie = TitleTrie(titles, eos_id=EOS)
    decoder = BeamSearchDecoder(model, trie, beam_width=width, length_penalty=length_penalty)
    results = decoder.decode(PROMPTS)
    expected = [
        _reference_beam_search(model, trie, prompt, width, trie.depth, length_penalty)
        for prompt in PROMPTS
    ]
    _assert_same_results(results, expected)
    assert decoder.last_steps <= trie.depth - 1
    assert decoder.last_truncated == 0
    if eos_bias:
        # Short titles finish first and beat every longer continuation: with
        # length normalisation too, since the bound reads how deep each
        # live hypothesis' subtree goes, not the deepest title overall.
        assert decoder.last_steps < trie.depth - 1


def test_length_normalisation_lets_a_likely_long_title_beat_a_short_one():
    # Both titles start with probability 0.5, and every later token has
    # probability 0.72 (token 11 takes the rest). [3] + eos sums to -1.02,
    # [4, 1, 2, 9] + eos to -2.01: summed, the short title wins; per token
    # (-0.51 against -0.40), the long one.
    class Scripted(HashModel):
        def logits_for(self, history):
            logits = np.full(VOCABULARY, -np.inf, dtype=np.float32)
            last = history[-1]
            if last >= 20:
                logits[[3, 4]] = 0.0
            else:
                logits[{3: EOS, 4: 1, 1: 2, 2: 9, 9: EOS}[last]] = np.log(0.72)
                logits[11] = np.log(0.28)
            return logits

    trie = TitleTrie([[3], [4, 1, 2, 9]], eos_id=EOS)
    summed = BeamSearchDecoder(Scripted(), trie, beam_width=2).decode([[20]])[0]
    mean = BeamSearchDecoder(Scripted(), trie, beam_width=2, length_penalty=1.0).decode([[20]])[0]
    assert trie.tokens_at(summed[0][0]) == [3, EOS]
    assert trie.tokens_at(mean[0][0]) == [4, 1, 2, 9, EOS]
    assert mean[0][1] == pytest.approx(summed[1][1] / 5, abs=1e-9)


def test_width_one_follows_the_greedy_constrained_walk():
    # Beam width 1 walks the most likely non-eos token; every eos met on the
    # way is a finished title, and the best of them is the answer.
    model = HashModel()
    trie = TitleTrie(_random_titles(60, seed=6, longest=8), eos_id=EOS)
    decoder = BeamSearchDecoder(model, trie, beam_width=1)
    results = decoder.decode(PROMPTS)
    for prompt, hyps in zip(PROMPTS, results):
        node, history, score, exits = trie.root, list(prompt), 0.0, []
        while True:
            log_prob = _log_softmax(model.logits_for(history))
            allowed = trie.allowed(node).tolist()
            if EOS in allowed:
                exits.append((trie.child(node, EOS), score + log_prob[EOS]))
            onward = [token for token in allowed if token != EOS]
            if not onward:
                break
            token = max(onward, key=lambda t: log_prob[t])
            node, score = trie.child(node, token), score + log_prob[token]
            history.append(token)
        best = max(exits, key=lambda pair: pair[1])
        assert hyps[0][0] == best[0]
        assert hyps[0][1] == pytest.approx(best[1], abs=1e-9)
        assert len(hyps) == 1
    assert decoder.last_steps <= trie.depth - 1


def test_max_steps_cuts_longer_titles_off():
    model = HashModel()
    trie = TitleTrie(TINY_TITLES, eos_id=EOS)
    decoder = BeamSearchDecoder(model, trie, beam_width=3, max_steps=2)
    results = decoder.decode(PROMPTS)
    expected = [_reference_beam_search(model, trie, prompt, 3, 2) for prompt in PROMPTS]
    _assert_same_results(results, expected)
    assert all(len(trie.tokens_at(leaf)) <= 2 for hyps in results for leaf, _ in hyps)
    assert decoder.last_steps == 1
    assert decoder.last_truncated == len(PROMPTS)


def test_tokens_the_model_rules_out_are_never_generated():
    trie = TitleTrie(TINY_TITLES, eos_id=EOS)
    results = BeamSearchDecoder(HashModel(mask_token=5), trie, beam_width=10).decode(PROMPTS)
    for hyps in results:
        # Every title but [3, 5] and [3, 5, 7]: a zero-probability path is no result.
        assert len(hyps) == 5
        assert all(5 not in trie.tokens_at(leaf) for leaf, _ in hyps)


def test_no_prompts_no_work():
    decoder = BeamSearchDecoder(HashModel(), TitleTrie(TINY_TITLES, eos_id=EOS))
    assert decoder.decode([]) == []
    assert decoder.last_steps == decoder.last_step_rows == 0


def test_bad_use_is_explained():
    trie = TitleTrie(TINY_TITLES, eos_id=EOS)
    with pytest.raises(ValueError, match="beam_width must be at least 1; got 0"):
        BeamSearchDecoder(HashModel(), trie, beam_width=0)
    with pytest.raises(ValueError, match="max_steps must be at least 1"):
        BeamSearchDecoder(HashModel(), trie, max_steps=0)
    for penalty in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="length_penalty must be a finite number >= 0"):
            BeamSearchDecoder(HashModel(), trie, length_penalty=penalty)
    with pytest.raises(ValueError, match="eos_id 0 differs from the trie's 1"):
        BeamSearchDecoder(HashModel(), TitleTrie([[3]], eos_id=1))
    with pytest.raises(TypeError, match="lacks prefill, step"):
        BeamSearchDecoder(type("Bare", (), {"eos_id": EOS})(), trie)
    decoder = BeamSearchDecoder(HashModel(), trie)
    with pytest.raises(ValueError, match="Prompt 1 is empty"):
        decoder.decode([[20], []])
    with pytest.raises(ValueError, match="trie uses token id 20"):
        BeamSearchDecoder(HashModel(), TitleTrie([[20]], eos_id=EOS)).decode([[1]])

    class NaNModel(HashModel):
        def step(self, state, rows, tokens):
            logits, state = super().step(state, rows, tokens)
            logits[-1, 4] = np.nan
            return logits, state

    with pytest.raises(ValueError, match="logits row .* NaN"):
        BeamSearchDecoder(NaNModel(), trie).decode(PROMPTS)

    class ShortModel(HashModel):
        def step(self, state, rows, tokens):
            logits, state = super().step(state, rows, tokens)
            return logits[:-1], state

    with pytest.raises(ValueError, match=r"model.step must return logits of shape \("):
        BeamSearchDecoder(ShortModel(), trie).decode(PROMPTS)
