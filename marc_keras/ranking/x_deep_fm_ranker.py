"""xDeepFM CTR ranker over the shared fields (issue 30, MARC Table 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.config.downstream_config import DEEP_UNITS
from marc_keras.layers.compressed_interaction_network import CompressedInteractionNetwork
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class XDeepFMRanker(FieldRanker):
    """xDeepFM: a compressed interaction network beside a deep tower, one logit over both.

    Lian et al. 2018; KAR's `xDeepFM` (`RS/models.py`): the CIN's pooled
    feature maps and the deep tower's output on the flattened fields are
    concatenated and mapped to one logit.

    Args:
        cin_layer_sizes: feature maps per CIN layer (KAR: [50, 50]).
        deep_units: the deep tower's sizes (KAR: [200, 80]).
        **kwargs: `FieldRanker` arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = XDeepFMRanker.from_features(features, tier, item_vectors=table_i)
    """

    def __init__(
        self,
        *args: Any,
        cin_layer_sizes: Sequence[int] = (50, 50),
        deep_units: Sequence[int] = DEEP_UNITS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cin_layer_sizes = tuple(int(size) for size in cin_layer_sizes)
        self.deep_units = tuple(int(units) for units in deep_units)
        self.cin = CompressedInteractionNetwork(self.cin_layer_sizes, name="cin")
        self.deep = [
            keras.layers.Dense(units, activation="relu", name=f"deep_{index}")
            for index, units in enumerate(self.deep_units)
        ]
        self.logit = keras.layers.Dense(1, name="logit")

    def interact(self, inputs, fields, training=None):
        deep = ops.concatenate(fields, axis=-1)  # (B, F * D)
        for layer in self.deep:
            deep = layer(deep)
        cin = self.cin(ops.stack(fields, axis=1))  # (B, sum(cin_layer_sizes))
        return self.logit(ops.concatenate([cin, deep], axis=-1))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "cin_layer_sizes": list(self.cin_layer_sizes),
            "deep_units": list(self.deep_units),
        }
