"""FiBiNet CTR ranker over the shared fields (issue 30, MARC Table 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.config.downstream_config import DEEP_UNITS
from marc_keras.layers.mlp_stack import build_dense_stack
from marc_keras.layers.senet_bilinear import SenetBilinear
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class FiBiNetRanker(FieldRanker):
    """FiBiNet: SENET field re-weighting and bilinear pair products, then an MLP.

    Huang et al. 2019; KAR's `FiBiNet` (`RS/models.py`): bilinear products
    of every field pair, on the fields and on their SENET re-weighting,
    concatenated and fed to an MLP and one logit.

    Args:
        reduction_ratio: SENET's excitation width over the field count (KAR: 0.5).
        bilinear_type: "field_all" (KAR), "field_each" or "field_interaction".
        deep_units: the MLP's sizes before the logit (KAR: [200, 80]).
        **kwargs: `FieldRanker` arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = FiBiNetRanker.from_features(features, tier, item_vectors=table_i)
    """

    def __init__(
        self,
        *args: Any,
        reduction_ratio: float = 0.5,
        bilinear_type: str = "field_all",
        deep_units: Sequence[int] = DEEP_UNITS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.reduction_ratio = float(reduction_ratio)
        self.bilinear_type = str(bilinear_type)
        self.deep_units = tuple(int(units) for units in deep_units)
        self.interaction = SenetBilinear(
            self.reduction_ratio, self.bilinear_type, name="senet_bilinear"
        )
        self.deep = build_dense_stack(self.deep_units, 1, "relu", 0.0, "deep")

    def interact(self, inputs, fields, training=None):
        x = self.interaction(ops.stack(fields, axis=1))  # (B, F * (F - 1) * D)
        for layer in self.deep:
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "reduction_ratio": self.reduction_ratio,
            "bilinear_type": self.bilinear_type,
            "deep_units": list(self.deep_units),
        }
