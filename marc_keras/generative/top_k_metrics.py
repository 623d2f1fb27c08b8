"""Full-ranking HR@K and NDCG@K with one held-out item per user (L2D Sec. 4.1)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def expand_title_groups(
    ranked_groups: Sequence[Sequence[int]], group_items: Sequence[Sequence[int]], top_k: int
) -> np.ndarray:
    """Turns ranked titles into ranked items: a title stands for every item that has it.

    Args:
        ranked_groups: per user, title indices best first (may be short).
        group_items: per title index, its catalogue indices.
        top_k: items kept per user.

    Returns:
        int64 (U, top_k), -1 where fewer items were ranked.
    """
    ranked = np.full((len(ranked_groups), top_k), -1, "int64")
    for user, groups in enumerate(ranked_groups):
        items = [item for group in groups for item in group_items[group]][:top_k]
        ranked[user, : len(items)] = items
    return ranked


def hit_rate_and_ndcg(
    ranked_items: np.ndarray, targets: np.ndarray, ks: Iterable[int] = (1, 5, 10, 20)
) -> dict[str, float]:
    """HR@K (target among the top K) and NDCG@K (1 / log2(rank + 1) of the target, 1-based).

    Args:
        ranked_items: int (U, L) catalogue indices best first; -1 pads.
        targets: int (U,) each user's held-out item.
        ks: cut-offs; each must be <= L (a beam of width B ranks only B).

    Returns:
        `{"hr@K": ..., "ndcg@K": ...}` averaged over users.

    Example:
    >>> hit_rate_and_ndcg(np.array([[3, 1], [0, 2]]), np.array([1, 5]), ks=(1, 2))
    {'hr@1': 0.0, 'ndcg@1': 0.0, 'hr@2': 0.5, 'ndcg@2': 0.31546487678572877}
    """
    ranked_items, targets = np.asarray(ranked_items), np.asarray(targets)
    if ranked_items.ndim != 2 or len(ranked_items) != len(targets) or not len(targets):
        raise ValueError(
            f"ranked_items must be (users, L) with one target per user; got "
            f"{ranked_items.shape} and {targets.shape}."
        )
    hits = ranked_items == targets[:, None]  # (U, L), at most one True per row
    # 0-based rank of the target, L where it is not ranked
    rank = np.where(hits.any(axis=1), hits.argmax(axis=1), ranked_items.shape[1])
    metrics = {}
    for k in ks:
        if k > ranked_items.shape[1]:
            raise ValueError(f"K = {k} exceeds the {ranked_items.shape[1]} items ranked per user.")
        inside = rank < k
        metrics[f"hr@{k}"] = float(inside.mean())
        metrics[f"ndcg@{k}"] = float(np.where(inside, 1.0 / np.log2(rank + 2.0), 0.0).mean())
    return metrics
