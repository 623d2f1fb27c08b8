"""A click logit from the cosine of two vectors: the "without matching network" ablation."""

from __future__ import annotations

from typing import Any

import keras

from marc_keras.losses.pair_losses import cosine_similarity


@keras.saving.register_keras_serializable(package="marc_keras")
class CosineScorer(keras.layers.Layer):
    """logit = scale * cos(c_u, c_i) + bias, with a learned scale and bias.

    Replaces MARC's matching network in the "without matching network"
    ablation (MARC, Sec. 4.3): the compressed vectors alone must carry the
    click signal, through their angle. The scale starts at `initial_scale`
    so that cosines in [-1, 1] give logits of a useful range.

    Args:
        initial_scale: starting value of the scale.
        **kwargs: base layer arguments.

    Returns:
        Called on `(user_vectors, item_vectors)`, both (B, k), returns (B, 1).

    Example:
    >>> scorer = CosineScorer()
    >>> scorer(np.ones((2, 8), "float32"), np.ones((2, 8), "float32"))  # 10 * 1 + 0
    """

    def __init__(self, initial_scale: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_scale = float(initial_scale)

    def build(self, user_vectors_shape, item_vectors_shape) -> None:
        self.scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_scale), name="scale"
        )
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, user_vectors, item_vectors):
        # The cosine is computed in float32 for stability; the logits come out
        # in the layer's compute dtype, as every other layer's output does.
        logits = self.scale * cosine_similarity(user_vectors, item_vectors) + self.bias
        return keras.ops.cast(logits, self.compute_dtype)[:, None]

    def compute_output_shape(self, user_vectors_shape, item_vectors_shape) -> tuple:
        return (user_vectors_shape[0], 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "initial_scale": self.initial_scale}
