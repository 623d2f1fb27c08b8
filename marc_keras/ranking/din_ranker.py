"""DIN CTR ranker over the shared fields (issue 30, MARC Table 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.config.downstream_config import DEEP_UNITS
from marc_keras.layers.mlp_stack import build_dense_stack
from marc_keras.layers.target_attention import TargetAttention
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class DINRanker(FieldRanker):
    """Deep Interest Network: the history pooled by attention against the target item.

    Zhou et al. 2018; KAR's `DeepInterestNet` (`RS/models.py`) and
    FuxiCTR's `DIN_Attention`: each history item's id embedding is weighed
    by an MLP on [target, item, target - item, target * item] (padding
    masked, no softmax), and the weighted sum joins the other fields in an
    MLP and one logit. The activation is ReLU rather than DIN's Dice,
    which normalises over the batch.

    Args:
        attention_units: the attention MLP's sizes (DIN: [80, 40]).
        deep_units: the final MLP's sizes before the logit (KAR: [200, 80]).
        **kwargs: `FieldRanker` arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = DINRanker.from_features(features, tier, item_vectors=table_i)
    """

    uniform_fields = False

    def __init__(
        self,
        *args: Any,
        attention_units: Sequence[int] = (80, 40),
        deep_units: Sequence[int] = DEEP_UNITS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.attention_units = tuple(int(units) for units in attention_units)
        self.deep_units = tuple(int(units) for units in deep_units)
        self.attention = TargetAttention(self.attention_units, name="target_attention")
        self.deep = build_dense_stack(self.deep_units, 1, "relu", 0.0, "deep")

    def interact(self, inputs, fields, training=None):
        history = inputs["history_items"]  # (B, H), 0 = padding
        interest = self.attention(
            self.item_embedding(inputs["item"]),  # (B, D)
            self.item_embedding(history),  # (B, H, D)
            keys_mask=history > 0,
            training=training,
        )  # (B, D)
        x = ops.concatenate([*fields, interest], axis=-1)
        for layer in self.deep:
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "attention_units": list(self.attention_units),
            "deep_units": list(self.deep_units),
        }
