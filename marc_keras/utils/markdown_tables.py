"""Markdown tables of downstream results, mean +- std (standard library only)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


def _seed_count(row: dict) -> int:
    return len(row.get("aucs") or row.get("seeds") or row.get("epochs") or ())


def _epochs(chosen) -> str:
    """One seed's chosen epoch, or its folds' epochs joined by "+" (the re-ranking table)."""
    return "+".join(str(epoch) for epoch in chosen) if isinstance(chosen, list) else str(chosen)


def mean_std_cell(row: dict, prefix: str, signed: bool = False) -> str:
    """`mean +- std`, or `mean +- n/a` when one seed gives no spread to report."""
    mean = f"{row[f'{prefix}_mean']:{'+' if signed else ''}.4f}"
    if _seed_count(row) == 1:
        return f"{mean} +- n/a"
    return f"{mean} +- {row[f'{prefix}_std']:.4f}"


def downstream_markdown(
    rows: Iterable[dict],
    extra_columns: Sequence[tuple[str, Callable[[dict], str]]] = (),
) -> str:
    """Rows of `DownstreamEvaluator.evaluate` as a Markdown table, mean +- std over seeds.

    The paired delta is the row's AUC minus the ranker's without vectors
    (the rows' `baseline`, DCNv2 by default) on the same seed;
    "lift" says whether its mean exceeds its std. One seed has no spread:
    its std prints as "n/a" and nothing is called a lift.

    Args:
        rows: the rows.
        extra_columns: (header, row -> cell text) pairs appended to each row.
    """
    rows = list(rows)
    baseline = next((row["baseline"] for row in rows if "baseline" in row), "dcnv2")
    headers = [
        "tier",
        "representation",
        "test AUC",
        f"paired delta vs {baseline}",
        "lift",
        "test logloss",
        f"RelaImpr vs {baseline}",
        "epochs",
        "wall (s)",
        *(header for header, _ in extra_columns),
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        relaimpr = f"{100 * row['relaimpr']:+.2f}%" if "relaimpr" in row else "-"
        paired = (
            mean_std_cell(row, "paired_delta", signed=True) if "paired_delta_mean" in row else "-"
        )
        lift = {True: "yes", False: "no"}.get(row.get("lift"), "-")
        if _seed_count(row) == 1 and lift != "-":
            lift = "n/a (1 seed)"
        epochs = "/".join(str(epochs) for epochs in row.get("epochs") or []) or "-"
        lines.append(
            f"| {row.get('tier') or '-'} | {row['name']} "
            f"| {mean_std_cell(row, 'auc')} | {paired} | {lift} "
            f"| {mean_std_cell(row, 'logloss')} | {relaimpr} "
            f"| {epochs} | {row['seconds']:.0f} |"
            + "".join(f" {cell(row)} |" for _, cell in extra_columns)
        )
    return "\n".join(lines)


def stage_markdown(
    rows: Iterable[dict], metrics: Sequence[str], deltas: Sequence[str], reference: str
) -> str:
    """Rows of the re-ranking or retrieval table as Markdown, mean +- std over seeds.

    Args:
        rows: the rows (`rerank_table` or `retrieval_table`).
        metrics: the metric columns, e.g. ("map@5", "ndcg@5").
        deltas: the metrics whose paired delta against `reference` gets a column.
        reference: the reference row's name (its deltas are 0 by construction).
    """
    headers = [
        "split",
        "row",
        *metrics,
        *(f"{metric} vs {reference}" for metric in deltas),
        "epochs",
        "wall (s)",
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [mean_std_cell(row, metric) for metric in metrics]
        cells += [
            mean_std_cell(row, f"paired_delta_vs_{reference}_{metric}", signed=True)
            if f"paired_delta_vs_{reference}_{metric}_mean" in row
            else "-"
            for metric in deltas
        ]
        epochs = "/".join(_epochs(seed) for seed in row.get("epochs") or []) or "-"
        lines.append(
            f"| {row.get('split', 'warm')} | {row['name']} | "
            + " | ".join(cells)
            + f" | {epochs} | {row['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def mra_markdown(rows: Iterable[dict], markers: Iterable[dict] = ()) -> str:
    """MRA rows (per method and layer) and markers as a Markdown table, mean +- std."""
    lines = [
        "| method | layer | test AUC | test logloss | RelaImpr vs dcnv2 | wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    # Curve rows are named by method and layer; markers (dcnv2, a run's
    # MARC-C) by their own name.
    named = [(row["method"], row["layer"], row) for row in rows]
    named += [(marker["name"], marker.get("layer", "-"), marker) for marker in markers]
    for name, layer, row in named:
        relaimpr = f"{100 * row['relaimpr']:+.2f}%" if "relaimpr" in row else "-"
        lines.append(
            f"| {name} | {layer} | {mean_std_cell(row, 'auc')} | "
            f"{mean_std_cell(row, 'logloss')} | {relaimpr} "
            f"| {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def decoder_markdown(rows: dict[str, dict]) -> str:
    """Decoder rows (L2D evaluation) as a Markdown table.

    Args:
        rows: row name -> metrics; a metric is a number, or a dict with
            `mean` and `std` (over seeds). Missing metrics (beam's K > B,
            most-popular's latency) print as "-".
    """
    columns = ["hr@1", "hr@5", "hr@10", "hr@20", "ndcg@10", "ms_per_user_b1", "ms_per_user_b16"]
    lines = ["| decoder | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]

    def cell(value, column):
        digits = 0 if column.startswith("ms_") else 4
        if value is None:
            return "-"
        if isinstance(value, dict):
            return f"{value['mean']:.{digits}f} +- {value['std']:.{digits}f}"
        return f"{value:.{digits}f}"

    for name, row in rows.items():
        cells = [cell(row.get(column), column) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
