"""MARC's compression network C: r (d-dim) -> c (compressed) (MARC, Sec. 3.2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from marc_keras.layers.mlp_stack import build_dense_stack


@keras.saving.register_keras_serializable(package="marc_keras")
class CompressionNetwork(keras.layers.Layer):
    """MLP that compresses a backbone representation into a small vector.

    Kept separate from the backbone so that the compression objective does not
    reshape the LLM's last layers (the "mid-layer representation advantage"
    MARC avoids). The paper uses hidden [256] and a 128-d output.

    Args:
        hidden_units: hidden layer sizes; default (256,).
        output_dim: width of the compressed vector c; default 128.
        activation: hidden activation; default "relu".
        dropout: dropout after each hidden layer; default 0.
        **kwargs: base layer arguments.

    Returns:
        Called on (B, d) representations, returns (B, output_dim).

    Example:
    >>> compression = CompressionNetwork()
    >>> compression(np.zeros((4, 384), "float32")).shape
    torch.Size([4, 128])
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (256,),
        output_dim: int = 128,
        activation: str | Callable | None = "relu",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.output_dim = int(output_dim)
        self.activation = activation
        self.dropout = float(dropout)
        self.dense_layers = build_dense_stack(
            self.hidden_units, self.output_dim, activation, self.dropout, "compression"
        )

    def build(self, input_shape) -> None:
        for layer in self.dense_layers:
            layer.build(input_shape)
            input_shape = layer.compute_output_shape(input_shape)

    def call(self, representations, training=None):
        x = representations
        for layer in self.dense_layers:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "output_dim": self.output_dim,
            "activation": self.activation,
            "dropout": self.dropout,
        }
