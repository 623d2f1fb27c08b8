"""Mixture-of-experts adaptor that turns an LLM vector into a ranker field (KAR, MARC Sec. 4.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.layers.mlp_stack import build_dense_stack


@keras.saving.register_keras_serializable(package="marc_keras")
class ExpertAdaptor(keras.layers.Layer):
    """Maps an external vector to one ranker field through gated experts.

    Each expert is an MLP (hidden [128], output 32 by default); a softmax gate
    over the same input weighs them. This is how KAR and MARC feed LLM
    vectors of any width into a CTR model as a 32-d field.

    Args:
        num_experts: number of experts (DESIGN.md: 2-5).
        hidden_units: hidden sizes of each expert.
        output_dim: width of the field.
        **kwargs: base layer arguments.

    Returns:
        (B, d) -> (B, output_dim).

    Example:
    >>> adaptor = ExpertAdaptor(num_experts=3)
    >>> adaptor(np.zeros((4, 384), "float32")).shape
    torch.Size([4, 32])
    """

    def __init__(
        self,
        num_experts: int = 3,
        hidden_units: Sequence[int] = (128,),
        output_dim: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"num_experts must be at least 1; got {num_experts}.")
        self.num_experts = int(num_experts)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.output_dim = int(output_dim)
        self.experts = [
            build_dense_stack(self.hidden_units, self.output_dim, "relu", 0.0, f"expert_{index}")
            for index in range(self.num_experts)
        ]
        self.gate = keras.layers.Dense(self.num_experts, activation="softmax", name="gate")

    def build(self, input_shape) -> None:
        for expert in self.experts:
            shape = input_shape
            for layer in expert:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.gate.build(input_shape)

    def call(self, vectors):
        outputs = []
        for expert in self.experts:
            x = vectors
            for layer in expert:
                x = layer(x)
            outputs.append(x)
        stacked = ops.stack(outputs, axis=1)  # (B, E, output_dim)
        weights = self.gate(vectors)[:, :, None]  # (B, E, 1)
        return ops.sum(stacked * weights, axis=1)

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "hidden_units": list(self.hidden_units),
            "output_dim": self.output_dim,
        }
