"""DCN (v1) CTR ranker over the shared fields (issue 30, MARC Table 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.config.downstream_config import CROSS_LAYERS, DEEP_UNITS
from marc_keras.layers.cross_network import CrossNetwork
from marc_keras.layers.mlp_stack import build_dense_stack
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class DCNv1Ranker(FieldRanker):
    """Deep & Cross Network v1: a vector cross network beside a deep tower.

    KAR's `DCN` (`RS/models.py`, mode "v1"): the flattened fields go
    through a `CrossNetwork` of `cross_layers` layers and, in parallel, a
    deep tower; their concatenation goes through a final MLP and one logit.
    The fields are `FieldRanker`'s (MARC Sec. 4.1.3 feeds the vectors in
    through its adaptors).

    Args:
        cross_layers: number of DCN v1 cross layers (KAR: 3).
        deep_units: the deep tower's sizes (KAR: [200, 80]).
        final_units: the final MLP's sizes before the logit (KAR: [200, 80]).
        **kwargs: `FieldRanker` arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = DCNv1Ranker.from_features(features, tier, item_vectors=table_i)
    """

    uniform_fields = False

    def __init__(
        self,
        *args: Any,
        cross_layers: int = CROSS_LAYERS,
        deep_units: Sequence[int] = DEEP_UNITS,
        final_units: Sequence[int] = DEEP_UNITS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cross_layers = int(cross_layers)
        self.deep_units = tuple(int(units) for units in deep_units)
        self.final_units = tuple(int(units) for units in final_units)
        self.cross = CrossNetwork(self.cross_layers, name="cross")
        self.deep = [
            keras.layers.Dense(units, activation="relu", name=f"deep_{index}")
            for index, units in enumerate(self.deep_units)
        ]
        self.head = build_dense_stack(self.final_units, 1, "relu", 0.0, "final")

    def interact(self, inputs, fields, training=None):
        x0 = ops.concatenate(fields, axis=-1)  # (B, F * D)
        deep = x0
        for layer in self.deep:
            deep = layer(deep)
        x = ops.concatenate([self.cross(x0), deep], axis=-1)  # (B, F * D + deep_units[-1])
        for layer in self.head:
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "cross_layers": self.cross_layers,
            "deep_units": list(self.deep_units),
            "final_units": list(self.final_units),
        }
