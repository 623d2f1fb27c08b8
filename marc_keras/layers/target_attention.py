"""DIN's attention pooling of a user's history with respect to the target item."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.layers.mlp_stack import build_dense_stack


@keras.saving.register_keras_serializable(package="marc_keras")
class TargetAttention(keras.layers.Layer):
    """Sums history items weighted by an MLP score of each item against the target.

    The local activation unit of DIN (Zhou et al., "Deep Interest Network
    for Click-Through Rate Prediction", KDD 2018): an MLP on
    [query, key, query - key, query * key] scores every history item, padded
    items score 0, and the output is the score-weighted sum of the history.
    As in DIN the scores are not normalised by default, so the output keeps
    the intensity of the user's interest; `use_softmax` normalises them over
    the unpadded items.

    Follows FuxiCTR's `DIN_Attention` in
    `fuxictr/pytorch/layers/attentions/target_attention.py` (hidden layers
    with an activation, a linear output unit with bias, the mask multiplied
    into the scores, -1e9 on padded items before the optional softmax) and
    KAR's `AttentionPoolingLayer` in `RS/layers.py`, which is the same
    without the softmax. Both use Dice as DIN's activation; Dice is not
    provided here, so `activation` takes any Keras activation.

    Args:
        hidden_units: hidden sizes of the scoring MLP; default (80, 40), DIN's.
        activation: activation of the hidden layers; default "relu"
            (FuxiCTR's `DIN_Attention` default).
        dropout: dropout after each hidden layer.
        use_softmax: normalise the scores with a softmax over the history.
        **kwargs: base layer arguments.

    Returns:
        Called on `(query, keys, keys_mask)`: query (B, E) the target item,
        keys (B, T, E) the history, keys_mask (B, T) 1 for real items and 0
        for padding (optional; taken from a Keras mask on `keys`, e.g. an
        `Embedding(mask_zero=True)`, when not given), returns (B, E).

    Example:
    >>> attention = TargetAttention(hidden_units=(80, 40))
    >>> query, keys = np.zeros((4, 16), "float32"), np.zeros((4, 10, 16), "float32")
    >>> attention(query, keys, np.ones((4, 10), "float32")).shape
    torch.Size([4, 16])
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (80, 40),
        activation: str | Callable | None = "relu",
        dropout: float = 0.0,
        use_softmax: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        if any(units < 1 for units in self.hidden_units):
            raise ValueError(
                f"TargetAttention hidden_units must all be >= 1; got {list(self.hidden_units)}."
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"TargetAttention dropout must be in [0, 1); got {dropout}.")
        self.activation = activation
        self.dropout = float(dropout)
        self.use_softmax = bool(use_softmax)
        self.score_layers = build_dense_stack(
            self.hidden_units, 1, activation, self.dropout, "attention"
        )

    def build(self, query_shape, keys_shape, keys_mask_shape=None) -> None:
        if len(query_shape) != 2 or len(keys_shape) != 3 or query_shape[-1] != keys_shape[-1]:
            raise ValueError(
                "TargetAttention takes query (B, E) and keys (B, T, E) of the same E; "
                f"got {query_shape} and {keys_shape}."
            )
        shape = (*keys_shape[:2], 4 * keys_shape[-1])
        for layer in self.score_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, query, keys, keys_mask=None, training=None):
        queries = ops.broadcast_to(query[:, None, :], ops.shape(keys))  # (B, T, E)
        x = ops.concatenate([queries, keys, queries - keys, queries * keys], axis=-1)
        for layer in self.score_layers:
            x = layer(x, training=training)
        scores = ops.squeeze(x, axis=-1)  # (B, T)
        if keys_mask is not None:
            mask = ops.cast(keys_mask, scores.dtype)
            scores = scores * mask
            if self.use_softmax:
                scores = scores - 1.0e9 * (1.0 - mask)
        if self.use_softmax:
            scores = ops.softmax(scores, axis=-1)
        return ops.sum(scores[:, :, None] * keys, axis=1)

    def compute_output_shape(self, query_shape, keys_shape, keys_mask_shape=None) -> tuple:
        return tuple(query_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "dropout": self.dropout,
            "use_softmax": self.use_softmax,
        }
