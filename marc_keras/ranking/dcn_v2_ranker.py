"""DCNv2 CTR ranker with optional external user/item vectors (DESIGN.md Sec. 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import keras_rs
from keras import ops

from marc_keras.config.downstream_config import CROSS_LAYERS, DEEP_UNITS
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class DCNv2Ranker(FieldRanker):
    """The downstream ranker of the KAR / MARC protocol: DCNv2 over sparse fields.

    The fields are `FieldRanker`'s. Three full-matrix
    `keras_rs.layers.FeatureCross` layers, then a deep tower [200, 80] and
    one logit (stacked DCNv2). With `cross_projection_dim` each cross
    layer's (F*D, F*D) matrix is factored through that rank, DCNv2's
    low-rank variant (Wang et al. 2021, Sec. 3.2): most of the ranker's
    multiply-adds sit in the full matrices. It flattens its fields, so the
    user vector's field may be narrower (`user_adaptor_dim`).

    Args:
        cross_layers: number of FeatureCross layers.
        cross_projection_dim: rank of each cross layer's matrix, or `None`
            for full rank.
        deep_units: sizes of the deep tower.
        **kwargs: `FieldRanker` arguments (vocabularies, vector widths,
            adaptor settings).

    All adaptor settings off (the defaults) is the downstream v2 ranker;
    `marc_keras.config.AdaptorSetting.ranker_arguments` gives them from a config.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = DCNv2Ranker.from_features(features, user_vectors=table_u, item_vectors=table_i)
    >>> ranker.compile(optimizer="adamw", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    """

    uniform_fields = False

    def __init__(
        self,
        *args: Any,
        cross_layers: int = CROSS_LAYERS,
        cross_projection_dim: int | None = None,
        deep_units: Sequence[int] = DEEP_UNITS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cross_layers = int(cross_layers)
        self.cross_projection_dim = (
            None if cross_projection_dim is None else int(cross_projection_dim)
        )
        self.deep_units = tuple(int(units) for units in deep_units)
        self.crosses = [
            keras_rs.layers.FeatureCross(
                projection_dim=self.cross_projection_dim, name=f"cross_{index}"
            )
            for index in range(self.cross_layers)
        ]
        self.deep = [
            keras.layers.Dense(units, activation="relu", name=f"deep_{index}")
            for index, units in enumerate(self.deep_units)
        ]
        self.logit = keras.layers.Dense(1, name="logit")

    def interact(self, inputs, fields, training=None):
        x0 = ops.concatenate(fields, axis=-1)  # (B, fields * D)
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        for layer in self.deep:
            x = layer(x)
        return self.logit(x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "cross_layers": self.cross_layers,
            "cross_projection_dim": self.cross_projection_dim,
            "deep_units": list(self.deep_units),
        }
