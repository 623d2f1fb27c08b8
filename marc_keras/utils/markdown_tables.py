"""Markdown tables of downstream results, mean +- std (standard library only)."""


def downstream_markdown(rows):
    """Rows of `DownstreamEvaluator.evaluate` as a Markdown table with mean +- std."""
    lines = [
        "| representation | test AUC | test logloss | RelaImpr vs dcnv2 | wall (s) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        relaimpr = f"{100 * row['relaimpr']:+.2f}%" if "relaimpr" in row else "-"
        lines.append(
            f"| {row['name']} | {row['auc_mean']:.4f} +- {row['auc_std']:.4f} | "
            f"{row['logloss_mean']:.4f} +- {row['logloss_std']:.4f} | {relaimpr} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def mra_markdown(rows, markers=()):
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
            f"| {name} | {layer} | {row['auc_mean']:.4f} +- {row['auc_std']:.4f} | "
            f"{row['logloss_mean']:.4f} +- {row['logloss_std']:.4f} | {relaimpr} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)
