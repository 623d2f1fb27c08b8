"""BIGRec's decoding: greedy generation, then grounding the text to the nearest real titles."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from marc_keras.generative.latent_decoder import squared_distances


class GreedyGroundingDecoder:
    """Writes one title per user greedily, then ranks every catalogue title by L2 distance.

    Generation is unconstrained (BIGRec, beam = 1): it may write a title
    that does not exist. Grounding embeds the generated tokens and every
    real title the same way (the LM's final hidden state at the text's last
    token, as BIGRec's evaluation does) and ranks titles by Euclidean
    distance, so it gives a full ranking. `valid` says which generations
    were exactly a catalogue title.

    Args:
        model: a `DecodingModel` (`CachedDecodingModel`).
        embed: takes token id lists, returns float (N, d) text embeddings.
        title_sequences: token ids of each distinct title (no end-of-text).
        max_new_tokens: the most tokens generated per user.
        batch_size: titles embedded per call while building the index.

    Example:
    >>> decoder = GreedyGroundingDecoder(stepper, embed, prompts.title_sequences, 32)
    >>> generated, ranked_titles = decoder.decode(prompt_ids, top_k=20)
    """

    def __init__(
        self,
        model,
        embed: Callable[[Sequence[Sequence[int]]], np.ndarray],
        title_sequences: Sequence[Sequence[int]],
        max_new_tokens: int,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.embed = embed
        self.max_new_tokens = int(max_new_tokens)
        self.title_ids = {tuple(sequence): index for index, sequence in enumerate(title_sequences)}
        self.title_states = np.concatenate(
            [
                embed(title_sequences[start : start + batch_size])
                for start in range(0, len(title_sequences), batch_size)
            ]
        )  # (G, d)

    def generate(self, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        """Greedy continuations, batched; each stops at end-of-text (not included)."""
        logits, state = self.model.prefill(prompts)
        generated = [[] for _ in prompts]
        active = np.arange(len(prompts))  # prompt of each live row
        for _ in range(self.max_new_tokens):
            tokens = logits.argmax(axis=1)
            going = tokens != self.model.eos_id
            for row in np.flatnonzero(going):
                generated[active[row]].append(int(tokens[row]))
            if not going.any() or len(generated[active[going][0]]) >= self.max_new_tokens:
                break
            rows = np.flatnonzero(going)
            active = active[rows]
            logits, state = self.model.step(state, rows, tokens[rows])
        return generated

    def is_title(self, tokens: Sequence[int]) -> bool:
        return tuple(tokens) in self.title_ids

    def decode(
        self, prompts: Sequence[Sequence[int]], top_k: int
    ) -> tuple[list[list[int]], np.ndarray]:
        """Generated tokens per prompt and the top-k title indices nearest to each.

        Returns:
            `(generated, ranked)`: token lists, and int64 (U, top_k) title
            indices, nearest first.
        """
        generated = self.generate(prompts)
        # An empty generation (end-of-text first) is embedded as that token.
        states = self.embed([tokens or [self.model.eos_id] for tokens in generated])
        distances = squared_distances(states, self.title_states)
        top_k = min(int(top_k), len(self.title_states))
        return generated, np.argsort(distances, axis=1, kind="stable")[:, :top_k]
