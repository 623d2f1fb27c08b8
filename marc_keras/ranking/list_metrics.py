"""Re-ranking metrics as KAR computes them: MAP@k, NDCG@k and clicks@k over lists.

MARC's re-ranking table (paper Sec. 4.2.2, Table 3) follows KAR's released
code (`RS/utils.py`, `evaluate_rerank`): per list, items are ordered by score
(ties keep list order), and for each cut-off k

- NDCG@k = DCG@k / IDCG@k with gain 2^rel - 1 and discount 1 / log2(i + 1),
  the ideal order being the labels sorted; a list with no positive counts 0;
- MAP@k is KAR's: the mean of precision@i over the positives *within the top
  k*, i.e. divided by the hits in the top k, not by all the list's positives
  (keras-rs' `MeanAveragePrecision` divides by all positives); a list with no
  hit in the top k counts 0;
- clicks@k is the number of positives in the top k.

Each metric is the mean over lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_CUTOFFS = (1, 3, 5, 7)


def list_metrics(
    labels: np.ndarray, scores: np.ndarray, cutoffs: Sequence[int] = DEFAULT_CUTOFFS
) -> dict[str, float]:
    """KAR's re-ranking metrics of scored lists.

    Args:
        labels: (L, n) relevance labels (0/1 clicks, or graded).
        scores: (L, n) scores; higher ranks first.
        cutoffs: the k values.

    Returns:
        A dict with `map@k`, `ndcg@k` and `clicks@k` for every k.

    Example:
    >>> list_metrics([[0, 1, 1]], [[0.9, 0.5, 0.1]], cutoffs=(2,))["map@2"]
    0.5
    """
    labels = np.asarray(labels, "float64")
    scores = np.asarray(scores, "float64")
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(
            f"labels and scores must be (lists, items) arrays of one shape; got {labels.shape} "
            f"and {scores.shape}."
        )
    if any(int(k) < 1 for k in cutoffs):
        raise ValueError(f"cutoffs must be positive; got {list(cutoffs)}.")
    ranked = np.take_along_axis(labels, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    ideal = -np.sort(-labels, axis=1)
    positions = np.arange(1, labels.shape[1] + 1)
    discount = 1.0 / np.log2(positions + 1)
    hits = (ranked >= 1).astype("float64")
    hits_so_far = np.cumsum(hits, axis=1)
    precision_at_hits = hits * hits_so_far / positions
    results = {}
    for k in cutoffs:
        top = min(int(k), labels.shape[1])
        dcg = ((2.0 ** ranked[:, :top] - 1) * discount[:top]).sum(axis=1)
        ideal_dcg = ((2.0 ** ideal[:, :top] - 1) * discount[:top]).sum(axis=1)
        found = hits_so_far[:, top - 1]
        results[f"map@{k}"] = float(
            np.mean(
                np.divide(
                    precision_at_hits[:, :top].sum(axis=1),
                    found,
                    out=np.zeros(len(labels)),
                    where=found > 0,
                )
            )
        )
        results[f"ndcg@{k}"] = float(
            np.mean(np.divide(dcg, ideal_dcg, out=np.zeros(len(labels)), where=ideal_dcg > 0))
        )
        results[f"clicks@{k}"] = float(np.mean(ranked[:, :top].sum(axis=1)))
    return results
