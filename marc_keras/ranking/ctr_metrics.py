"""Exact CTR metrics on numpy arrays: AUC (with ties), logloss, RelaImpr."""

from __future__ import annotations

import numpy as np

LOGLOSS_EPSILON = 1e-7


def _check(labels, scores):
    labels, scores = np.asarray(labels, "float64").ravel(), np.asarray(scores, "float64").ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores.")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("Labels must be 0 or 1.")
    return labels, scores


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count half.

    Computed from average ranks (Mann-Whitney U), exact for ties.

    Raises:
        ValueError: only one class is present.
    """
    labels, scores = _check(labels, scores)
    positives = labels.sum()
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels.")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(labels.size)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], labels.size]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0  # average 1-based rank of the tie group
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def logloss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]."""
    labels, probabilities = _check(labels, probabilities)
    p = np.clip(probabilities, LOGLOSS_EPSILON, 1 - LOGLOSS_EPSILON)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def relative_improvement(auc_value: float, base_auc: float) -> float:
    """RelaImpr = (AUC - 0.5) / (AUC_base - 0.5) - 1 (KAR / MARC papers).

    Undefined (NaN) when the base ranks at chance (AUC 0.5).
    """
    if base_auc == 0.5:
        return float("nan")
    return (auc_value - 0.5) / (base_auc - 0.5) - 1.0
