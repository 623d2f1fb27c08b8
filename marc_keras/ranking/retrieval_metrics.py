"""Full-catalogue retrieval metrics with several positives per user (MARC Table 2's columns).

For each user the candidates are sorted by score (ties keep candidate order),
the user's excluded candidates (items the query already holds) removed; with
P the user's positives and rank(p) the 1-based position of positive p:

- HR@K = |P in the top K| / |P| (the share of the user's positives retrieved;
  with one positive it is the usual hit rate);
- NDCG@K = sum over the positives in the top K of 1 / log2(rank + 1), divided
  by its best value sum_{i <= min(K, |P|)} 1 / log2(i + 1);
- MRR = 1 / rank of the best-ranked positive.

Each metric is the mean over users that have at least one positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_CUTOFFS = (10, 20, 50)


def retrieval_metrics(
    scores: np.ndarray,
    positives: np.ndarray,
    excluded: np.ndarray | None = None,
    cutoffs: Sequence[int] = DEFAULT_CUTOFFS,
) -> dict[str, float]:
    """HR@K, NDCG@K and MRR of scored candidates.

    Args:
        scores: (U, C) scores; higher ranks first.
        positives: (U, C) bool, the user's positives.
        excluded: (U, C) bool, candidates removed for that user (never
            positives), or `None`.
        cutoffs: the K values.

    Returns:
        `hr@K`, `ndcg@K` for every K, `mrr`, and `users` (the users judged).

    Example:
    >>> retrieval_metrics([[0.9, 0.5, 0.1]], [[False, True, True]], cutoffs=(1, 2))["hr@2"]
    0.5
    """
    scores = np.asarray(scores, "float64")
    positives = np.asarray(positives, bool)
    excluded = np.zeros_like(positives) if excluded is None else np.asarray(excluded, bool)
    if scores.ndim != 2 or not scores.shape == positives.shape == excluded.shape:
        raise ValueError(
            "scores, positives and excluded must be (users, candidates) arrays of one shape; "
            f"got {scores.shape}, {positives.shape} and {excluded.shape}."
        )
    if (positives & excluded).any():
        raise ValueError("A candidate is both a positive and excluded for the same user.")
    if any(int(k) < 1 for k in cutoffs):
        raise ValueError(f"cutoffs must be positive; got {list(cutoffs)}.")
    judged = positives.any(axis=1)
    if not judged.any():
        raise ValueError("There is no user with a positive among the candidates to judge.")
    scores, positives, excluded = scores[judged], positives[judged], excluded[judged]
    order = np.argsort(-np.where(excluded, -np.inf, scores), axis=1, kind="stable")
    ranked = np.take_along_axis(positives, order, axis=1)  # excluded items sort last
    kept = np.take_along_axis(~excluded, order, axis=1)
    ranked &= kept
    positions = np.arange(1, ranked.shape[1] + 1)
    discount = 1.0 / np.log2(positions + 1)
    count = positives.sum(axis=1)
    results = {}
    for k in cutoffs:
        top = min(int(k), ranked.shape[1])
        hits = ranked[:, :top]
        ideal = np.cumsum(discount)[np.minimum(count, top) - 1]
        results[f"hr@{k}"] = float(np.mean(hits.sum(axis=1) / count))
        results[f"ndcg@{k}"] = float(np.mean((hits * discount[:top]).sum(axis=1) / ideal))
    results["mrr"] = float(np.mean(1.0 / (ranked.argmax(axis=1) + 1)))
    results["users"] = int(judged.sum())
    return results
