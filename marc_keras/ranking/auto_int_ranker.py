"""AutoInt CTR ranker over the shared fields (issue 30, MARC Table 4)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from marc_keras.layers.interacting_attention import InteractingAttention
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class AutoIntRanker(FieldRanker):
    """AutoInt: stacked multi-head self-attention over the fields, then one logit.

    Song et al. 2019; KAR's `AutoInt` (`RS/models.py`): `attention_layers`
    interacting layers with residual connections and scaled dot products,
    the last layer's (B, F, heads * attention_dim) output flattened into one
    linear logit, no deep tower.

    Args:
        attention_layers: number of interacting layers (KAR: 3).
        num_heads: attention heads per layer (KAR: 1).
        attention_dim: width of each head (KAR: 64).
        **kwargs: `FieldRanker` arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = AutoIntRanker.from_features(features, tier, item_vectors=table_i)
    """

    def __init__(
        self,
        *args: Any,
        attention_layers: int = 3,
        num_heads: int = 1,
        attention_dim: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if int(attention_layers) < 1:
            raise ValueError(
                f"AutoIntRanker attention_layers must be at least 1; got {attention_layers}."
            )
        self.attention_layers = int(attention_layers)
        self.num_heads = int(num_heads)
        self.attention_dim = int(attention_dim)
        self.attention = [
            InteractingAttention(
                self.attention_dim, self.num_heads, use_scale=True, name=f"attention_{index}"
            )
            for index in range(self.attention_layers)
        ]
        self.logit = keras.layers.Dense(1, name="logit")

    def interact(self, inputs, fields, training=None):
        x = ops.stack(fields, axis=1)  # (B, F, D)
        for layer in self.attention:
            x = layer(x, training=training)  # (B, F, heads * attention_dim)
        return self.logit(ops.reshape(x, (-1, x.shape[1] * x.shape[2])))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "attention_layers": self.attention_layers,
            "num_heads": self.num_heads,
            "attention_dim": self.attention_dim,
        }
