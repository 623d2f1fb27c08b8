"""Pooling of token hidden states into one vector per text (MARC, Sec. 3.1)."""

from __future__ import annotations

import difflib
from typing import Any

import keras
from keras import ops

POOLING_MODES = ("mean", "last", "cls")


def check_pooling_mode(mode: str) -> str:
    """Returns `mode` if it names a pooling, else raises with a suggestion."""
    if mode in POOLING_MODES:
        return mode
    close = difflib.get_close_matches(str(mode), POOLING_MODES, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"Unknown pooling '{mode}'; choose one of {', '.join(POOLING_MODES)}.{hint}")


@keras.saving.register_keras_serializable(package="marc_keras")
class TokenPooling(keras.layers.Layer):
    """Pools (B, T, d) hidden states into (B, d) under a padding mask.

    - `mean`: average of the non-padding tokens (encoders such as MiniLM).
    - `last`: the last non-padding token, for decoders whose last token has
      seen the whole text. Found as the position whose mask is 1 while the
      next one is 0, which works for left and right padding and exports to
      ONNX as plain arithmetic (no ArgMax / Gather index dtypes).
    - `cls`: the first token.

    Args:
        mode: one of "mean", "last", "cls".
        **kwargs: base layer arguments.

    Returns:
        Calling the layer on `(hidden_states, padding_mask)` returns (B, d).

    Example:
    >>> pooling = TokenPooling("mean")
    >>> pooling(np.ones((2, 3, 4)), np.array([[1, 1, 0], [1, 0, 0]])).shape
    (2, 4)
    """

    def __init__(self, mode: str = "mean", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = check_pooling_mode(mode)

    def call(self, hidden_states, padding_mask):
        if self.mode == "cls":
            return hidden_states[:, 0, :]
        mask = ops.cast(padding_mask, hidden_states.dtype)  # (B, T)
        if self.mode == "last":
            following = ops.pad(mask[:, 1:], ((0, 0), (0, 1)))
            mask = mask * (1.0 - following)
            return ops.sum(hidden_states * mask[:, :, None], axis=1)
        total = ops.sum(hidden_states * mask[:, :, None], axis=1)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return total / count

    def compute_output_shape(self, hidden_states_shape, padding_mask_shape=None) -> tuple:
        return (hidden_states_shape[0], hidden_states_shape[2])

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}
