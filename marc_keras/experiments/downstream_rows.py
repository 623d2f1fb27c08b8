"""The rows every downstream table carries besides the trained methods (downstream v2)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import numpy as np

from marc_keras.baselines.pca_projection import PCAProjection
from marc_keras.baselines.profile_vectors import ProfileVectors
from marc_keras.baselines.random_vectors import RandomVectors
from marc_keras.ranking.downstream_evaluator import LOGISTIC_ROW

if TYPE_CHECKING:
    import pandas as pd

    from marc_keras.data.kar_split import KARSplit
    from marc_keras.ranking.ranking_features import RankingFeatures

TOWERS = ("user", "item")


def vector_provider(
    features: RankingFeatures,
    vectors_of_seed: Callable[[int], tuple],
    towers: Collection[str] = TOWERS,
) -> Callable[[int], tuple]:
    """A provider for `DownstreamEvaluator.evaluate` from raw vectors.

    Args:
        features: the `RankingFeatures` the tables are aligned with.
        vectors_of_seed: callable seed -> ((user ids, users), (item ids, items)).
        towers: which towers get vectors; the other gets `None`.

    Returns:
        callable seed -> (user table or None, item table or None).
    """

    def provider(seed):
        pairs = vectors_of_seed(seed)
        return tuple(
            features.vector_table(ids, vectors, tower) if tower in towers else None
            for tower, (ids, vectors) in zip(TOWERS, pairs)
        )

    return provider


def vector_table_sizes(user_table: np.ndarray | None, item_table: np.ndarray | None) -> dict:
    """A model's vector-table arguments for a provider's tables: empty without vectors.

    `user_vector_dim`, `item_vector_dim` and `num_users`, the constructor
    arguments `PRMReranker` and `TwoTowerRetriever` share.
    """
    if user_table is None:
        return {}
    return {
        "user_vector_dim": user_table.shape[1],
        "item_vector_dim": item_table.shape[1],
        "num_users": len(user_table),
    }


def reference_providers(
    features: RankingFeatures,
    split: KARSplit,
    items: pd.DataFrame,
    frozen: tuple,
    pca_components: int,
    ranker: str = "dcnv2",
) -> dict[str, Callable[[int], tuple] | None]:
    """The ranker alone, the logistic reference, the controls, the frozen rows and PCA.

    Rows, in table order: the ranker's name (no vectors), `lr-2` (two-feature logistic
    regression), `random` (Gaussian vectors with the frozen vectors' spread,
    drawn per seed), `profile` (rating statistics of the text half),
    `frozen`, `frozen-user-only`, `frozen-item-only` (the pretrained
    backbone's pooled vectors) and `pca-{n}` (PCA of them, fitted on training
    users and the item catalogue).

    Args:
        features: a `RankingFeatures`.
        split: the `KARSplit` it was built from.
        items: the items table (for the profile's genres).
        frozen: ((user ids, users), (item ids, items)) of the frozen backbone.
        pca_components: width of the PCA row.
        ranker: the `evaluate.ranker`, the name of the row without vectors.

    Returns:
        dict name -> provider, for `DownstreamEvaluator.evaluate`.
    """
    (user_ids, frozen_users), (item_ids, frozen_items) = frozen
    training_users = np.isin(user_ids, split.users["train"])
    fit_rows = np.concatenate([frozen_users[training_users], frozen_items])
    # Cold items must look unseen: their interactions are held out of training.
    cold = split.cold_items.all if split.cold_items is not None else ()
    profile = ProfileVectors(split, items).vectors(unseen_items=cold)

    def random(seed):
        draw = RandomVectors(fit_rows, seed)
        return (user_ids, draw.draw(len(user_ids), 0)), (item_ids, draw.draw(len(item_ids), 1))

    projection = PCAProjection(pca_components).fit(fit_rows)
    pca = (
        (user_ids, projection.transform(frozen_users)),
        (item_ids, projection.transform(frozen_items)),
    )

    return {
        ranker: None,
        LOGISTIC_ROW: None,
        "random": vector_provider(features, random),
        "profile": vector_provider(features, lambda seed: profile),
        "frozen": vector_provider(features, lambda seed: frozen),
        "frozen-user-only": vector_provider(features, lambda seed: frozen, towers=("user",)),
        "frozen-item-only": vector_provider(features, lambda seed: frozen, towers=("item",)),
        f"pca-{pca_components}": vector_provider(features, lambda seed: pca),
    }
