"""The MRA curve: downstream test AUC per backbone layer per method, as PNG, JSON and Markdown."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from marc_keras.utils.atomic_files import write_atomically, write_json
from marc_keras.utils.markdown_tables import mra_markdown

PLOT_FILE = "mra.png"
JSON_FILE = "probe.json"
MARKDOWN_FILE = "probe.md"


def plot_mra(
    rows: Iterable[dict],
    path: str | os.PathLike,
    markers: Iterable[dict] = (),
    title: str | None = None,
) -> Path:
    """Draws test AUC per layer, one line per method, and saves it as a PNG.

    A figure of its own on the Agg canvas: pyplot and its global backend
    are left alone, so this works on headless machines and in notebooks.

    Args:
        rows: dicts with `method`, `layer`, `auc_mean`, `auc_std` (as
            `evaluate_layers` returns them); each method becomes a line with
            +- std error bars.
        path: the `.png` file to write (atomically).
        markers: rows drawn as horizontal dashed lines with a std band, such
            as "dcnv2" (no vectors) or a run's MARC-C; a marker with `method`
            and `layer` also gets a star at that layer in the method's colour.
        title: the figure title.

    Returns:
        `path`.

    Raises:
        ValueError: `rows` is empty or a row lacks a field.

    Example:
    >>> plot_mra(report["rows"], "probe/mra.png", markers=report["markers"])
    """
    rows = list(rows)
    if not rows:
        raise ValueError("plot_mra needs at least one row (method, layer, auc_mean, auc_std).")
    needed = ("method", "layer", "auc_mean", "auc_std")
    for row in rows:
        missing = [field for field in needed if field not in row]
        if missing:
            raise ValueError(
                f"MRA row {row.get('name', row)} lacks {missing}; rows need {list(needed)}."
            )
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colours = {}
    methods = list(dict.fromkeys(row["method"] for row in rows))
    for index, method in enumerate(methods):
        points = sorted(
            (row for row in rows if row["method"] == method), key=lambda row: row["layer"]
        )
        line = axes.errorbar(
            [row["layer"] for row in points],
            [row["auc_mean"] for row in points],
            yerr=[row["auc_std"] for row in points],
            marker="o",
            capsize=3,
            label=method,
            color=f"C{index}",
        )
        colours[method] = line.lines[0].get_color()
    for marker in markers:
        colour = colours.get(marker.get("method"), "0.4")
        mean, std = marker["auc_mean"], marker["auc_std"]
        axes.axhline(
            mean, color=colour, linestyle="--", linewidth=1, label=f"{marker['name']} {mean:.4f}"
        )
        axes.axhspan(mean - std, mean + std, color=colour, alpha=0.08, linewidth=0)
        if "layer" in marker and marker.get("method") in colours:
            axes.errorbar(
                [marker["layer"]],
                [mean],
                yerr=[std],
                marker="*",
                markersize=12,
                color=colour,
                capsize=3,
            )
    layers = sorted({row["layer"] for row in rows})
    axes.set_xticks(layers)
    axes.set_xlabel("layer (0 = embeddings)")
    axes.set_ylabel("downstream test AUC")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=150))
    return Path(path)


def write_mra_report(
    output_dir: str | os.PathLike, report: dict, title: str | None = None
) -> dict[str, Path]:
    """Writes `mra.png`, `probe.json` (the whole report) and `probe.md` into `output_dir`.

    Args:
        output_dir: the directory (created when missing).
        report: a dict with `rows` and optionally `markers` (see `plot_mra`),
            plus any settings to keep with the numbers.
        title: the figure title.

    Returns:
        A dict `plot`, `json`, `markdown` -> the paths written.
    """
    output_dir = Path(output_dir)
    rows, markers = report["rows"], report.get("markers", ())
    paths = {
        "plot": plot_mra(rows, output_dir / PLOT_FILE, markers, title),
        "json": output_dir / JSON_FILE,
        "markdown": output_dir / MARKDOWN_FILE,
    }
    write_json(paths["json"], report)
    markdown = mra_markdown(rows, markers)
    write_atomically(
        paths["markdown"], lambda temporary: Path(temporary).write_text(markdown + "\n")
    )
    return paths
