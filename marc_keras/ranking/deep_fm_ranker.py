"""DeepFM CTR ranker over the shared fields (issue 30, MARC Table 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.config.downstream_config import DEEP_UNITS
from marc_keras.layers.factorization_machine import FactorizationMachine
from marc_keras.layers.mlp_stack import build_dense_stack
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class DeepFMRanker(FieldRanker):
    """DeepFM: a factorization machine and a deep tower on the same fields, logits summed.

    Guo et al. 2017; KAR's `DeepFM` (`RS/models.py`) and FuxiCTR's
    `model_zoo/DeepFM`. By default the FM's second-order term runs over every
    field, the adaptors' vector fields included, as FuxiCTR does; with
    `fm_vector_fields=False` it pairs the other fields only, as KAR's does
    (its dense vectors reach the first-order term and the deep tower alone;
    the registry's "deepfm-kar"). The first-order term is a linear map of
    the fields (one weight per embedding coordinate) rather than one scalar
    per raw feature value: the fields are means over multi-hot histories and
    shares, for which a per-value scalar table would repeat the field code
    in width 1.

    Args:
        deep_units: the deep tower's sizes before its logit (KAR: [200, 80]).
        fm_vector_fields: whether the FM's pairwise term includes the vector
            fields (MARC Sec. 4.1.3 feeds them to the ranker as fields).
        **kwargs: `FieldRanker` arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = DeepFMRanker.from_features(features, tier, user_vectors=table_u)
    """

    def __init__(
        self,
        *args: Any,
        deep_units: Sequence[int] = DEEP_UNITS,
        fm_vector_fields: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.deep_units = tuple(int(units) for units in deep_units)
        self.fm_vector_fields = bool(fm_vector_fields)
        self.first_order = keras.layers.Dense(1, name="first_order")
        self.fm = FactorizationMachine(name="fm")
        self.deep = build_dense_stack(self.deep_units, 1, "relu", 0.0, "deep")

    def interact(self, inputs, fields, training=None):
        flat = ops.concatenate(fields, axis=-1)  # (B, F * D)
        deep = flat
        for layer in self.deep:
            deep = layer(deep)
        # `fields` puts the vector fields last.
        paired = (
            fields if self.fm_vector_fields else fields[: len(fields) - len(self.vector_tables)]
        )
        return self.first_order(flat) + self.fm(ops.stack(paired, axis=1)) + deep  # (B, 1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "deep_units": list(self.deep_units),
            "fm_vector_fields": self.fm_vector_fields,
        }
