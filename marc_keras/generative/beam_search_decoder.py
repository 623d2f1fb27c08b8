"""Trie-constrained beam search over item titles: L2D's language-space baseline.

The LLM writes the next item's title token by token, restricted to paths of a
`TitleTrie` (BIGRec; L2D, arXiv 2509.11524; D3, github SAI990323/DecodingMatters).
A hypothesis' score is the sum of its tokens' log-probabilities normalised
over the whole vocabulary, eos included, as Hugging Face beam search with
`prefix_allowed_tokens_fn` computes it. By default there is no length
normalisation (D3 showed that dividing by length favours long titles whose
late tokens are near-certain); `length_penalty` divides a finished title's
score by its length to that power, as Hugging Face's `length_penalty` does,
for models whose summed scores favour short titles instead. The search is
model-agnostic and batched over users: all users' live beams go through one
model call per step.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from marc_keras.generative.title_trie import TitleTrie

# Rows per chunk of the log-softmax normaliser: bounds its float64 temporary
# to ~32 MB whatever the vocabulary size.
_NORMALISER_ELEMENTS = 1 << 22


class DecodingModel(Protocol):
    """What `BeamSearchDecoder` needs from a language model: a prefill and a step.

    The state is opaque to the decoder (a KV cache, token histories, ...); it
    only has to hold one row per live hypothesis, in the order the decoder
    asked for.

    Attributes:
        eos_id: the end-of-sequence token id; must equal the trie's.
    """

    eos_id: int

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Any]:
        """Runs the prompts and returns next-token logits and a state.

        Args:
            prompts: token ids per prompt; lengths may differ (the model pads).

        Returns:
            `(logits, state)`: logits (n_prompts, V) float32 for the position
            after each prompt's last token; state with one row per prompt.
        """
        ...

    def step(self, state: Any, rows: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, Any]:
        """Extends selected rows of `state` by one token each.

        Args:
            state: a state from `prefill` or `step`.
            rows: (R,) int64 row indices into `state`; may repeat rows (a beam
                that branches) and leave rows out (a beam that died).
            tokens: (R,) int64, the token appended to each selected row.

        Returns:
            `(logits, new_state)`: row r of new_state continues
            `state[rows[r]]` with `tokens[r]`; logits (R, V) float32 for the
            position after it.
        """
        ...


class BeamSearchDecoder:
    """Beam search constrained to catalogue titles, batched over prompts.

    Per prompt, each step expands every live hypothesis by every token its trie
    node allows. A candidate ending in eos is a finished title: it joins the
    prompt's finished list (best `beam_width` kept), scored by its summed
    log-probability divided by `length ** length_penalty` (length: its tokens,
    eos included). The other candidates compete for the prompt's `beam_width`
    live slots by their summed log-probability. Since every log-prob is <= 0 a
    hypothesis' sum can only fall, so the best final score a live hypothesis
    can still reach is its sum divided by the longest length its trie node
    allows (`TitleTrie.longest_remaining`). A prompt stops exactly (no
    finished result can change any more) once it holds `beam_width` finished
    titles and no live hypothesis can reach more than its worst finished one,
    or when it has no live hypotheses left; its rows are no longer sent to the
    model. Ties keep the earlier candidate (beams in score order, tokens in id
    order; earlier-finished titles first).

    Candidates with probability exactly 0 (a logit of -inf, e.g. masked by the
    model) are dropped, so a prompt may get fewer than `beam_width` results.

    With `beam_width` >= the number of distinct titles no candidate is ever
    pruned and the result is the exhaustive ranking of the catalogue. With
    `beam_width=1` this is not plain greedy decoding: the walk follows the best
    non-eos token, and every eos met on the way is a finished candidate, so
    the result is the best title ending anywhere along that walk.

    Args:
        model: a `DecodingModel` (prefill, step, eos_id).
        trie: the catalogue's `TitleTrie`, built with the model's eos id.
        beam_width: live hypotheses per prompt, and results per prompt.
        max_steps: the most tokens a hypothesis may generate, eos included;
            default `trie.depth`, which reaches every title. A smaller bound
            cuts longer titles off, and `last_truncated` counts the prompts
            it stopped early.
        length_penalty: exponent of the length a finished title's summed
            log-probability is divided by; 0 (default, D3) ranks by the sum,
            1 by the mean log-probability per token. Chosen on validation
            users, never on test users.

    Attributes (of the last `decode`, for reporting):
        last_steps: number of `model.step` calls.
        last_step_rows: rows sent to `model.step`, summed over calls (the
            decoding cost beyond the prefill).
        last_truncated: prompts that still had live hypotheses able to beat
            a finished one when `max_steps` ran out.

    Raises:
        ValueError: beam_width or max_steps below 1; length_penalty negative
            or not finite; the model's eos_id is not the trie's.
        TypeError: `model` lacks prefill, step or eos_id.

    Example:
    >>> decoder = BeamSearchDecoder(model, TitleTrie(title_tokens, model.eos_id), 10)
    >>> results = decoder.decode([prompt_tokens_user_a, prompt_tokens_user_b])
    >>> leaf, score = results[0][0]  # user a's best title and its log-probability
    >>> decoder.trie.titles_at(leaf)  # the catalogue items tokenising to it
    (412,)
    """

    def __init__(
        self,
        model: DecodingModel,
        trie: TitleTrie,
        beam_width: int = 10,
        max_steps: int | None = None,
        length_penalty: float = 0.0,
    ) -> None:
        missing = [name for name in ("prefill", "step", "eos_id") if not hasattr(model, name)]
        if missing:
            raise TypeError(
                f"BeamSearchDecoder's model must follow DecodingModel (prefill, step, "
                f"eos_id); {type(model).__name__} lacks {', '.join(missing)}."
            )
        if int(model.eos_id) != trie.eos_id:
            raise ValueError(
                f"The model's eos_id {model.eos_id} differs from the trie's {trie.eos_id}; "
                "build the TitleTrie with the model's end-of-sequence id."
            )
        if int(beam_width) < 1:
            raise ValueError(f"beam_width must be at least 1; got {beam_width}.")
        if max_steps is not None and int(max_steps) < 1:
            raise ValueError(
                f"max_steps must be at least 1 (or None for the trie depth); got {max_steps}."
            )
        if not (np.isfinite(length_penalty) and length_penalty >= 0):
            raise ValueError(
                f"length_penalty must be a finite number >= 0 (0: summed log-probability, "
                f"1: mean per token); got {length_penalty}."
            )
        self.model = model
        self.length_penalty = float(length_penalty)
        self.trie = trie
        self.beam_width = int(beam_width)
        self.max_steps = trie.depth if max_steps is None else int(max_steps)
        self.last_steps = 0
        self.last_step_rows = 0
        self.last_truncated = 0

    def decode(self, prompts: list[list[int]]) -> list[list[tuple[int, float]]]:
        """Decodes the best titles for each prompt.

        Args:
            prompts: token ids per prompt (one prompt per user), non-empty.

        Returns:
            Per prompt, up to `beam_width` `(leaf, score)` pairs, best first:
            `leaf` a trie leaf node id (`trie.titles_at(leaf)` gives the input
            title indices that tokenise to it, `trie.tokens_at(leaf)` its
            tokens), `score` the summed full-vocabulary log-probability of its
            tokens and eos, divided by their count to the power
            `length_penalty`.

        Raises:
            ValueError: an empty prompt; the model's logits have the wrong
                shape, a vocabulary too small for the trie's tokens, or a row
                with NaN, +inf or only -inf.
        """
        self.last_steps = self.last_step_rows = self.last_truncated = 0
        if len(prompts) == 0:
            return []
        for index, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(
                    f"Prompt {index} is empty; the model needs at least one token to "
                    "predict the first title token from."
                )
        n_prompts, width, trie = len(prompts), self.beam_width, self.trie
        logits, state = self.model.prefill([list(prompt) for prompt in prompts])
        logits = np.asarray(logits)
        vocabulary = self._check_logits(logits, n_prompts, None, "prefill")

        # Live hypotheses, one per row of `state` and of `logits`.
        beam_prompt = np.arange(n_prompts, dtype=np.int64)
        beam_node = np.zeros(n_prompts, dtype=np.int64)
        beam_score = np.zeros(n_prompts, dtype=np.float64)
        finished: list[list[tuple[int, float]]] = [[] for _ in range(n_prompts)]
        finished_worst = np.full(n_prompts, -np.inf)
        finished_count = np.zeros(n_prompts, dtype=np.int64)
        done = np.zeros(n_prompts, dtype=bool)

        for generated in range(1, self.max_steps + 1):
            normaliser = _log_normaliser(logits)
            # Expand every beam by every allowed token, all beams at once (CSR gather).
            starts = trie.edge_offsets[beam_node]
            counts = trie.edge_offsets[beam_node + 1] - starts
            parent = np.repeat(np.arange(len(beam_node)), counts)
            first = np.cumsum(counts) - counts
            edge = starts[parent] + np.arange(len(parent)) - first[parent]
            token = trie.edge_tokens[edge]
            node = trie.edge_children[edge]
            log_prob = logits[parent, token].astype(np.float64) - normaliser[parent]
            score = beam_score[parent] + log_prob
            prompt = beam_prompt[parent]

            possible = np.isfinite(score)
            is_eos = possible & (token == trie.eos_id)
            self._add_finished(
                finished,
                finished_worst,
                finished_count,
                prompt[is_eos],
                score[is_eos] / generated**self.length_penalty,
                node[is_eos],
            )

            live = np.flatnonzero(possible & ~is_eos)
            live = live[_top_per_group(prompt[live], score[live], width)]
            longest = np.minimum(generated + trie.longest_remaining[node[live]], self.max_steps)
            best_live = np.full(n_prompts, -np.inf)
            np.maximum.at(best_live, prompt[live], score[live] / longest**self.length_penalty)
            has_live = np.zeros(n_prompts, dtype=bool)
            has_live[prompt[live]] = True
            done |= ~has_live | ((finished_count >= width) & (best_live <= finished_worst))
            live = live[~done[prompt[live]]]
            if len(live) == 0:
                break
            if generated == self.max_steps:
                self.last_truncated = int(np.unique(prompt[live]).size)
                break

            logits, state = self.model.step(state, parent[live], token[live])
            logits = np.asarray(logits)
            self.last_steps += 1
            self.last_step_rows += len(live)
            self._check_logits(logits, len(live), vocabulary, "step")
            beam_prompt, beam_node, beam_score = prompt[live], node[live], score[live]

        return [[(leaf, float(value)) for leaf, value in hyps] for hyps in finished]

    def _add_finished(self, finished, worst, count, prompt, score, leaf) -> None:
        """Merges new finished titles into each prompt's best-`beam_width` list."""
        order = np.lexsort((-score, prompt))  # per prompt, best first, stable on ties
        for index in order:
            p = int(prompt[index])
            hyps = finished[p]
            if len(hyps) >= self.beam_width and score[index] <= worst[p]:
                continue
            hyps.append((int(leaf[index]), float(score[index])))
            # Stable sort: an equal score found later stays behind.
            hyps.sort(key=lambda hyp: -hyp[1])
            del hyps[self.beam_width :]
            count[p] = len(hyps)
            worst[p] = hyps[-1][1]

    def _check_logits(self, logits, rows: int, vocabulary: int | None, call: str) -> int:
        """Checks the logits' shape against the rows asked for; returns V."""
        shape = getattr(logits, "shape", None)
        if shape is None or len(shape) != 2 or shape[0] != rows:
            raise ValueError(
                f"model.{call} must return logits of shape ({rows}, V) for {rows} rows; "
                f"got shape {shape}."
            )
        if vocabulary is None:
            largest = int(self.trie.edge_tokens.max())
            if shape[1] <= largest:
                raise ValueError(
                    f"model.{call} returned {shape[1]} logits per row but the trie uses "
                    f"token id {largest}; were the titles tokenised with the model's "
                    "tokenizer?"
                )
        elif shape[1] != vocabulary:
            raise ValueError(
                f"model.{call} returned {shape[1]} logits per row; prefill returned "
                f"{vocabulary}. The vocabulary size must not change during decoding."
            )
        return int(shape[1])


def _log_normaliser(logits: np.ndarray) -> np.ndarray:
    """Per row, log(sum(exp(logits))) in float64: log_softmax = logits - this.

    Raises:
        ValueError: a row holds NaN or +inf, or is -inf throughout.
    """
    logits = np.asarray(logits)
    result = np.empty(len(logits), dtype=np.float64)
    chunk = max(1, _NORMALISER_ELEMENTS // max(1, logits.shape[1]))
    for start in range(0, len(logits), chunk):
        block = logits[start : start + chunk].astype(np.float64)
        peak = block.max(axis=1)
        # max is NaN if any entry is, +inf if any is, -inf if all are.
        bad = np.flatnonzero(~np.isfinite(peak))
        if bad.size:
            raise ValueError(
                f"The model's logits row {start + int(bad[0])} holds NaN or +inf or is -inf "
                "throughout; beam search needs a proper distribution per row."
            )
        block -= peak[:, None]
        np.exp(block, out=block)
        result[start : start + chunk] = peak + np.log(block.sum(axis=1))
    return result


def _top_per_group(group: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` best scores of each group, grouped ascending, best first.

    Ties keep the lower index (lexsort is stable).
    """
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-score, group))
    ordered = group[order]
    group_first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[group_first, len(ordered)])
    rank = np.arange(len(ordered)) - np.repeat(group_first, sizes)
    return order[rank < k]
