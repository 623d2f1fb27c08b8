"""FiGNN CTR ranker over the shared fields (issue 30, MARC Table 4)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from marc_keras.layers.graph_interaction import GraphInteraction
from marc_keras.ranking.field_ranker import FieldRanker


@keras.saving.register_keras_serializable(package="marc_keras")
class FiGNNRanker(FieldRanker):
    """FiGNN: fields as nodes of a fully connected graph, then an attentional read-out.

    Li et al. 2019; KAR's `FiGNN` (`RS/models.py`): `GraphInteraction`
    updates every field from the others for `graph_layers` steps; the
    read-out (KAR's and FuxiCTR's `AttentionalPrediction`) scores each
    field with a shared linear map and weighs the scores with a sigmoid of
    a linear map of all fields: logit = sum_f sigmoid(W_w h)_f * (w_s . h_f).

    Args:
        graph_layers: message-passing steps (KAR: 2).
        **kwargs: `FieldRanker` arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = FiGNNRanker.from_features(features, tier, item_vectors=table_i)
    """

    def __init__(self, *args: Any, graph_layers: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.graph_layers = int(graph_layers)
        self.graph = GraphInteraction(self.graph_layers, name="graph")
        self.field_score = keras.layers.Dense(1, use_bias=False, name="field_score")
        self.field_weight = keras.layers.Dense(
            self.num_fields, activation="sigmoid", use_bias=False, name="field_weight"
        )

    def interact(self, inputs, fields, training=None):
        nodes = self.graph(ops.stack(fields, axis=1))  # (B, F, D)
        scores = self.field_score(nodes)[..., 0]  # (B, F)
        weights = self.field_weight(ops.reshape(nodes, (-1, nodes.shape[1] * nodes.shape[2])))
        return ops.sum(weights * scores, axis=-1, keepdims=True)  # (B, 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "graph_layers": self.graph_layers}
