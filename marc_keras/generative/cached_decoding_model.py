"""Token-by-token decoding of a `GenerativeRecommender` with a key/value cache."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from keras import ops

from marc_keras.generative.generative_recommender import GenerativeRecommender


@dataclasses.dataclass
class DecodingState:
    """Rows being decoded: one key/value cache per block and which cache slots are real.

    Attributes:
        caches: per block, (N, 2, C, kv_heads, head_dim) keys and values.
        key_valid: (N, C) bool, True where a slot holds a real token.
        position: the slot the next token is written to (equal for all rows:
            prompts are left-padded to one width).
    """

    caches: list
    key_valid: torch.Tensor
    position: int


class CachedDecodingModel:
    """Prefill and one-token steps of a causal LM for batched beam search and greedy decoding.

    Implements the `DecodingModel` protocol of `BeamSearchDecoder`. Prompts
    of different lengths are left-padded to one width, so every row writes
    its next token to the same cache slot; padded slots are masked out of
    every attention (RoPE depends only on distances, so the shift changes
    nothing). A padded query position attends to itself only, which keeps
    its (unused) output finite: an all-masked row would give NaN under torch's
    fused attention, and NaN times a zero attention weight is still NaN.

    Args:
        model: a `GenerativeRecommender`.
        max_new_tokens: cache slots reserved after the prompt.
        eos_id: the end-of-text token id (`TitlePrompts.eos_id`).

    Example:
    >>> stepper = CachedDecodingModel(model, max_new_tokens=32, eos_id=prompts.eos_id)
    >>> logits, state = stepper.prefill([[1, 2, 3], [4, 5]])
    >>> logits, state = stepper.step(state, np.array([0, 0, 1]), np.array([7, 8, 9]))
    """

    def __init__(self, model: GenerativeRecommender, max_new_tokens: int, eos_id: int) -> None:
        if int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}.")
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.eos_id = int(eos_id)
        lm = model.lm
        self._blocks = lm.transformer_layers
        self._kv_shape = (lm.num_key_value_heads, lm.hidden_dim // lm.num_query_heads)

    def _run(self, token_ids, state, attention_mask):
        lm = self.model.lm
        x = lm.token_embedding(token_ids)  # (N, t, d)
        caches = []
        for block, cache in zip(self._blocks, state.caches):
            x, cache = block(
                x,
                decoder_attention_mask=attention_mask,
                self_attention_cache=cache,
                self_attention_cache_update_index=state.position,
            )
            caches.append(cache)
        last = lm.layer_norm(x[:, -1:, :])
        logits = lm.token_embedding(last, reverse=True)[:, 0, :]  # (N, V)
        return logits, caches

    def prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, DecodingState]:
        """Runs left-padded prompts; logits (N, V) of each prompt's next token."""
        if not prompts or min(len(prompt) for prompt in prompts) == 0:
            raise ValueError("prefill needs at least one prompt, each with at least one token.")
        width = max(len(prompt) for prompt in prompts)
        slots = width + self.max_new_tokens
        token_ids = np.zeros((len(prompts), width), "int32")
        key_valid = np.zeros((len(prompts), slots), bool)
        for row, prompt in enumerate(prompts):
            token_ids[row, width - len(prompt) :] = prompt
            key_valid[row, width - len(prompt) : width] = True
        key_valid = torch.as_tensor(key_valid, device=_device())
        causal = torch.tril(torch.ones(width, slots, dtype=torch.bool, device=key_valid.device))
        itself = torch.eye(width, slots, dtype=torch.bool, device=key_valid.device)
        # (N, width, slots): real keys up to the query, or the padded query itself.
        attention_mask = (key_valid[:, None, :] & causal) | itself
        with torch.no_grad():
            dtype = self.model.lm.token_embedding.compute_dtype
            caches = [
                ops.zeros((len(prompts), 2, slots, *self._kv_shape), dtype=dtype)
                for _ in self._blocks
            ]
            state = DecodingState(caches, key_valid, 0)
            logits, caches = self._run(
                ops.convert_to_tensor(token_ids), state, ops.cast(attention_mask, "int32")
            )
        return ops.convert_to_numpy(ops.cast(logits, "float32")), DecodingState(
            caches, key_valid, width
        )

    def step(
        self, state: DecodingState, rows: np.ndarray, tokens: np.ndarray
    ) -> tuple[np.ndarray, DecodingState]:
        """Row r continues old row `rows[r]` with `tokens[r]`; logits (len(rows), V) of the next."""
        if state.position >= state.key_valid.shape[1]:
            raise ValueError(
                f"The cache is full after {self.max_new_tokens} new tokens; raise max_new_tokens."
            )
        index = torch.as_tensor(np.asarray(rows, "int64"), device=state.key_valid.device)
        key_valid = state.key_valid.index_select(0, index).clone()
        key_valid[:, state.position] = True
        with torch.no_grad():
            caches = [cache.index_select(0, index) for cache in state.caches]
            token_ids = ops.convert_to_tensor(np.asarray(tokens, "int32")[:, None])
            logits, caches = self._run(
                token_ids,
                DecodingState(caches, key_valid, state.position),
                ops.cast(key_valid[:, None, :], "int32"),
            )
        return ops.convert_to_numpy(ops.cast(logits, "float32")), DecodingState(
            caches, key_valid, state.position + 1
        )


def _device():
    from keras.src.backend.torch.core import get_device

    return get_device()
