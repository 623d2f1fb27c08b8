"""Mean +- std over seeds and same-seed paired deltas: the re-ranking and retrieval tables' rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from marc_keras.ranking.downstream_evaluator import mean_std


def summarise_seeds(per_seed: Sequence[dict], metrics: Iterable[str]) -> dict:
    """`{metric}_mean`, `{metric}_std` and `{metric}s` (per seed) of every metric.

    Args:
        per_seed: one dict of metric -> value per seed, in seed order.
        metrics: the metrics to summarise.
    """
    summary = {}
    for metric in metrics:
        values = [seed_metrics[metric] for seed_metrics in per_seed]
        summary.update(mean_std(metric, values))
        summary[f"{metric}s"] = values
    return summary


def add_paired_deltas(rows: Sequence[dict], reference: str, metrics: Iterable[str]) -> None:
    """Adds `paired_delta_vs_{reference}_{metric}_mean/_std` to every row, in place.

    A paired delta is the row's metric minus the reference row's on the same
    seed; nothing is added when no row is named `reference`.
    """
    base = next((row for row in rows if row["name"] == reference), None)
    if base is None:
        return
    for row in rows:
        for metric in metrics:
            deltas = [a - b for a, b in zip(row[f"{metric}s"], base[f"{metric}s"])]
            row.update(mean_std(f"paired_delta_vs_{reference}_{metric}", deltas))
