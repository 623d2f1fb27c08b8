"""AutoInt's interacting layer: multi-head self-attention over fields, residual, relu."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="marc_keras")
class InteractingAttention(keras.layers.Layer):
    """One multi-head self-attention layer across the fields of an example.

    The interacting layer of AutoInt (Song et al., "AutoInt: Automatic
    Feature Interaction Learning via Self-Attentive Neural Networks", CIKM
    2019). Each head projects the fields with W_q, W_k, W_v (no biases),
    attends over fields with a softmax of q k^T (divided by
    sqrt(attention_dim) with `use_scale`), and the heads are concatenated;
    the input, projected by W_res when its width differs, is added, then relu.

    Follows FuxiCTR's `MultiHeadSelfAttention` in
    `model_zoo/AutoInt/src/AutoInt.py` (W_res only with `use_residual` and a
    width change; defaults use_residual=True, use_scale=False) with KAR's
    reading of `attention_dim` (`MultiHeadAttention` in `RS/layers.py`, used
    by KAR's `AutoInt` in `RS/models.py`): it is the width of each head, so
    the output has num_heads * attention_dim features, where FuxiCTR splits
    attention_dim among the heads. With one head the two agree. KAR's ranker
    stacks three of these with attention_dim 64 and use_scale=True.

    Args:
        attention_dim: width of each head; default 64 (KAR).
        num_heads: number of heads; default 1.
        use_residual: add the (projected) input before the relu.
        use_scale: divide the attention logits by sqrt(attention_dim).
        dropout: dropout rate on the attention weights (FuxiCTR's dropout_rate).
        **kwargs: base layer arguments.

    Returns:
        Called on (B, F, E) field embeddings, returns (B, F, num_heads * attention_dim).

    Example:
    >>> interacting = InteractingAttention(attention_dim=64, num_heads=2)
    >>> interacting(np.zeros((4, 6, 16), "float32")).shape
    torch.Size([4, 6, 128])
    """

    def __init__(
        self,
        attention_dim: int = 64,
        num_heads: int = 1,
        use_residual: bool = True,
        use_scale: bool = False,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("attention_dim", attention_dim), ("num_heads", num_heads)):
            if int(value) < 1:
                raise ValueError(f"InteractingAttention {name} must be at least 1; got {value}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"InteractingAttention dropout must be in [0, 1); got {dropout}.")
        self.attention_dim = int(attention_dim)
        self.num_heads = int(num_heads)
        self.use_residual = bool(use_residual)
        self.use_scale = bool(use_scale)
        self.dropout = float(dropout)
        self.output_dim = self.num_heads * self.attention_dim
        # Created only when used, so a dropout-free layer draws no random numbers.
        self.attention_dropout = (
            keras.layers.Dropout(self.dropout, name="attention_dropout") if self.dropout else None
        )

    def build(self, input_shape) -> None:
        if len(input_shape) != 3:
            raise ValueError(
                f"InteractingAttention takes (B, F, E) field embeddings; got shape {input_shape}."
            )
        input_dim = input_shape[-1]
        self.query_kernel, self.key_kernel, self.value_kernel = (
            self.add_weight(
                shape=(input_dim, self.output_dim), initializer="glorot_uniform", name=name
            )
            for name in ("query_kernel", "key_kernel", "value_kernel")
        )
        self.residual_kernel = None
        if self.use_residual and input_dim != self.output_dim:
            self.residual_kernel = self.add_weight(
                shape=(input_dim, self.output_dim),
                initializer="glorot_uniform",
                name="residual_kernel",
            )

    def _heads(self, x):
        num_fields = x.shape[1]
        x = ops.reshape(x, (-1, num_fields, self.num_heads, self.attention_dim))
        return ops.transpose(x, (0, 2, 1, 3))  # (B, H, F, d)

    def call(self, field_embeddings, training=None):
        query = self._heads(ops.matmul(field_embeddings, self.query_kernel))
        key = self._heads(ops.matmul(field_embeddings, self.key_kernel))
        value = self._heads(ops.matmul(field_embeddings, self.value_kernel))
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))  # (B, H, F, F)
        if self.use_scale:
            scores = scores / (self.attention_dim**0.5)
        weights = ops.softmax(scores, axis=-1)
        if self.attention_dropout is not None:
            weights = self.attention_dropout(weights, training=training)
        output = ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3))  # (B, F, H, d)
        output = ops.reshape(output, (-1, output.shape[1], self.output_dim))
        if self.use_residual:
            residual = field_embeddings
            if self.residual_kernel is not None:
                residual = ops.matmul(residual, self.residual_kernel)
            output = output + residual
        return ops.relu(output)

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], input_shape[1], self.output_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "attention_dim": self.attention_dim,
            "num_heads": self.num_heads,
            "use_residual": self.use_residual,
            "use_scale": self.use_scale,
            "dropout": self.dropout,
        }
