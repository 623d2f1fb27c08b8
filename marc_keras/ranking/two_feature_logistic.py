"""The `lr-2` reference row: a two-feature logistic regression (downstream v2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from marc_keras.ranking.ranking_features import RankingFeatures

# Pseudo-count of the item click-rate prior: an item seen n times gets
# (clicks + 10 * mean rate) / (n + 10), so rare items stay near the mean.
CLICK_RATE_PRIOR_COUNT = 10.0
NEWTON_STEPS = 25


class TwoFeatureLogistic:
    """Logistic regression on an item's click rate and the user's mean history rating.

    The floor a neural ranker must clear before any table is read: if DCNv2
    alone does not beat this on test users, the ranker is undertrained.
    Features: the target item's smoothed click rate over the training
    samples, and the mean of the sample's behaviour-history ratings (up to
    30; the training mean when there is none), both standardized on the
    training samples. Fitted by Newton's method (three parameters, exact).

    Args:
        features: a `RankingFeatures`.

    Example:
    >>> model = TwoFeatureLogistic(features).fit(np.arange(len(features.labels["train"])))
    >>> scores = model.scores("test")  # logits, one per test sample
    """

    def __init__(self, features: RankingFeatures) -> None:
        self.features = features
        self.weights = None

    def _raw_columns(self, split):
        inputs = self.features.inputs[split]
        ratings = inputs["history_ratings"].astype("float64")
        counts = np.count_nonzero(ratings, axis=1)
        mean_rating = np.where(
            counts > 0, ratings.sum(axis=1) / np.maximum(counts, 1), self._rating_mean
        )
        click_rate = self._item_click_rate[inputs["item"]]
        return np.stack([click_rate, mean_rating], axis=1)

    def _columns(self, split):
        return (self._raw_columns(split) - self._center) / self._scale

    def fit(self, train_rows: np.ndarray) -> TwoFeatureLogistic:
        """Fits on the training samples at `train_rows`; returns self."""
        inputs, labels = self.features.inputs["train"], self.features.labels["train"]
        items, clicks = inputs["item"][train_rows], labels[train_rows].astype("float64")
        num_items = self.features.item_genres.shape[0]
        seen = np.bincount(items, minlength=num_items)
        clicked = np.bincount(items, weights=clicks, minlength=num_items)
        self._item_click_rate = (clicked + CLICK_RATE_PRIOR_COUNT * clicks.mean()) / (
            seen + CLICK_RATE_PRIOR_COUNT
        )
        ratings = inputs["history_ratings"][train_rows]
        self._rating_mean = ratings[ratings > 0].mean() if (ratings > 0).any() else 0.0
        raw = self._raw_columns("train")[train_rows]
        self._center, self._scale = raw.mean(axis=0), np.maximum(raw.std(axis=0), 1e-12)
        design = np.column_stack([np.ones(len(raw)), (raw - self._center) / self._scale])
        weights = np.zeros(3)
        for _ in range(NEWTON_STEPS):
            probabilities = 1.0 / (1.0 + np.exp(-design @ weights))
            gradient = design.T @ (probabilities - clicks)
            hessian = (design * (probabilities * (1 - probabilities))[:, None]).T @ design
            weights -= np.linalg.solve(hessian + 1e-9 * np.eye(3), gradient)
        self.weights = weights
        return self

    def scores(self, split: str) -> np.ndarray:
        """Logits for every sample of `split` ("train", "validation" or "test")."""
        if self.weights is None:
            raise ValueError("Call fit(train_rows) before scores().")
        columns = self._columns(split)
        return self.weights[0] + columns @ self.weights[1:]
