"""MARC's user-item matching network M (MARC, Sec. 3.2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.layers.mlp_stack import build_dense_stack


@keras.saving.register_keras_serializable(package="marc_keras")
class MatchingNetwork(keras.layers.Layer):
    """Scores a compressed user-item pair with explicit interactions.

    The pair enters as [c_u, c_i, c_u * c_i] (the elementwise product is the
    explicit interaction that the paper's ablation shows the compressed
    vectors need), then an MLP, hidden [128], gives one click logit.

    Args:
        hidden_units: hidden layer sizes; default (128,).
        explicit_interactions: append c_u * c_i to the input; default True.
            False is the "without explicit interactions" ablation.
        activation: hidden activation; default "relu".
        dropout: dropout after each hidden layer; default 0.
        **kwargs: base layer arguments.

    Returns:
        Called on `(user_vectors, item_vectors)`, both (B, k), returns (B, 1)
        logits.

    Example:
    >>> matching = MatchingNetwork()
    >>> matching(np.ones((4, 128), "float32"), np.ones((4, 128), "float32")).shape
    torch.Size([4, 1])
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (128,),
        explicit_interactions: bool = True,
        activation: str | Callable | None = "relu",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.explicit_interactions = bool(explicit_interactions)
        self.activation = activation
        self.dropout = float(dropout)
        self.dense_layers = build_dense_stack(
            self.hidden_units, 1, activation, self.dropout, "matching"
        )

    def _check_widths(self, user_shape, item_shape):
        if user_shape[-1] != item_shape[-1]:
            raise ValueError(
                "MatchingNetwork needs user and item vectors of the same width "
                f"for the interaction c_u * c_i; got {user_shape[-1]} and "
                f"{item_shape[-1]}. Give both compression networks the same output_dim."
            )

    def build(self, user_vectors_shape, item_vectors_shape) -> None:
        self._check_widths(user_vectors_shape, item_vectors_shape)
        parts = 3 if self.explicit_interactions else 2
        input_shape = (user_vectors_shape[0], parts * user_vectors_shape[-1])
        for layer in self.dense_layers:
            layer.build(input_shape)
            input_shape = layer.compute_output_shape(input_shape)

    def call(self, user_vectors, item_vectors, training=None):
        self._check_widths(user_vectors.shape, item_vectors.shape)
        parts = [user_vectors, item_vectors]
        if self.explicit_interactions:
            parts.append(user_vectors * item_vectors)
        x = ops.concatenate(parts, axis=-1)  # (B, 3k) or (B, 2k)
        for layer in self.dense_layers:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, user_vectors_shape, item_vectors_shape) -> tuple:
        return (user_vectors_shape[0], 1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "explicit_interactions": self.explicit_interactions,
            "activation": self.activation,
            "dropout": self.dropout,
        }
