"""The re-ranking and retrieval tables of MARC runs (paper Sec. 4.2.2, Tables 2 and 3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.experiments.marc_run import CONFIG_FILE, MARCRun, downstream_inputs
from marc_keras.experiments.rerank_table import (
    BASELINE_ROW as RERANK_BASELINE,
    RerankSettings,
    rerank_table,
)
from marc_keras.experiments.retrieval_table import (
    BASELINE_ROW as RETRIEVAL_BASELINE,
    RetrievalSettings,
    retrieval_table,
)
from marc_keras.config.downstream_config import RANKERS
from marc_keras.ranking.downstream_evaluator import LOGISTIC_ROW
from marc_keras.utils.atomic_files import write_atomically, write_json
from marc_keras.utils.markdown_tables import stage_markdown

TASKS = ("rerank", "retrieval")
# The CTR table's own rows that mean nothing here: a CTR ranker alone and the
# logistic reference are CTR models, the one-tower rows are CTR ablations.
NOT_STAGE_ROWS = (*RANKERS, LOGISTIC_ROW, "frozen-user-only", "frozen-item-only")
TRAINED_ROWS = ("marc-o", "marc-c", "marc-c-cross-fit")
COLUMNS = {
    "rerank": (("map@1", "map@3", "map@5", "map@7", "ndcg@1", "ndcg@3", "ndcg@5", "ndcg@7"),
               ("ndcg@5", "map@5")),
    "retrieval": (("hr@10", "hr@20", "hr@50", "ndcg@10", "ndcg@20", "ndcg@50", "mrr"),
                  ("ndcg@20", "hr@20", "mrr")),
}  # fmt: skip


def evaluate_stage(
    runs: Sequence[MARCRun],
    task: str,
    downstream: DownstreamConfig | None = None,
    log: Callable[[str], object] = print,
) -> list[dict]:
    """The re-ranking or the retrieval table of one or several MARC runs.

    Rows: the model without vectors (`prm` / `base`), then the `random` and
    `profile` controls, the frozen backbone's vectors, their PCA, MARC-O,
    MARC-C (and MARC-C cross-fitted when the runs have it), from the runs'
    cached vectors (`downstream_inputs`). One model per row and
    `evaluate.seeds` seed. With `evaluate.cold_item_share` the table is the
    cold-item one (`marc_keras.data.cold_items`); MARC's rows are then only
    fair when the runs were trained with the same share, and the report
    says which were not (`marc_saw_cold_items`).

    Args:
        runs: `MARCRun`s whose `[data]` settings agree.
        task: "rerank" or "retrieval".
        downstream: a `DownstreamConfig`, by default the first run's
            `[evaluate]` (its `seeds`, `max_epochs`, `patience` and
            `cold_item_share` are read; the other settings are the CTR
            ranker's).
        log: callable taking one progress line.

    Returns:
        The table's rows; also written as `evaluate-{task}[-cold].json` and
        `.md` into the first run's directory.

    Raises:
        ValueError: an unknown task.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; use one of {['ctr', *TASKS]}.")
    runs = list(runs)
    downstream = downstream or runs[0].config.evaluate
    inputs = downstream_inputs(runs, downstream, log)
    baseline = RERANK_BASELINE if task == "rerank" else RETRIEVAL_BASELINE
    rows = {
        baseline: None,
        **{
            name: provider
            for name, provider in inputs.representations.items()
            if provider is not None and name not in NOT_STAGE_ROWS
        },
    }
    share = downstream.cold_item_share
    leaky = [str(run.run_dir) for run in runs if _trained_share(run) != share] if share else []
    if leaky:
        log(
            f"MARC runs {leaky} were not trained with evaluate.cold_item_share = {share}: "
            "their MARC rows saw cold items' pairs and overstate cold-item quality"
        )
    # One source of the training budget for every task: the `[evaluate]` table.
    budget = dict(
        seeds=tuple(downstream.seeds),
        max_epochs=downstream.max_epochs,
        patience=downstream.patience,
    )
    if task == "rerank":
        settings = RerankSettings(**budget)
        results = rerank_table(inputs.split, inputs.features, rows, settings, log=log)
    else:
        settings = RetrievalSettings(**budget)
        results = retrieval_table(inputs.split, inputs.features, rows, settings, log=log)
    for row in results:
        row["marc_saw_cold_items"] = bool(leaky) and row["name"] in TRAINED_ROWS
    report = {
        "task": task,
        "split": "cold" if share else "warm",
        "cold_item_share": share,
        "runs": [str(run.run_dir) for run in runs],
        "runs_trained_on_cold_items": leaky,
        "settings": dataclasses.asdict(settings),
        "rows": results,
    }
    stem = report_stem(task, downstream)
    write_json(runs[0].run_dir / f"{stem}.json", report)
    metrics, deltas = COLUMNS[task]
    markdown = stage_markdown(results, metrics, deltas, baseline)
    if leaky:
        markdown += (
            f"\n\nMARC rows of {', '.join(leaky)} were trained on cold items' pairs "
            "(train with the same evaluate.cold_item_share for a fair cold-item row)."
        )
    write_atomically(
        runs[0].run_dir / f"{stem}.md",
        lambda temporary: Path(temporary).write_text(markdown + "\n"),
    )
    return results


def _trained_share(run: MARCRun) -> float:
    """The `evaluate.cold_item_share` a run was trained with (its saved config)."""
    return RunConfig.from_file(run.run_dir / CONFIG_FILE).evaluate.cold_item_share


def report_stem(task: str, downstream: DownstreamConfig) -> str:
    """`evaluate-{task}`, with `-cold` when the table is the cold-item one."""
    return f"evaluate-{task}" + ("-cold" if downstream.cold_item_share else "")
