"""The `profile` positive control alone against the model without vectors (issue 29).

Trains only the two rows a control needs (the retriever or PRM without
vectors, and with the `profile` vectors) on a run's split, for the seeds of
the stage tables, and prints each row with its paired deltas: a quick check
of whether the instrument sees the control's signal, at a quarter of a full
table's time. With a run trained with `evaluate.cold_item_share`, the table
is the cold-item one.

Usage:
  python benchmarks/profile_control.py --run-dir runs/demo-cold --task retrieval
"""

import argparse
import json
import time
from pathlib import Path

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun, downstream_inputs
from marc_keras.experiments.rerank_table import BASELINE_ROW as RERANK_BASE
from marc_keras.experiments.rerank_table import RerankSettings, rerank_table
from marc_keras.experiments.retrieval_table import BASELINE_ROW as RETRIEVAL_BASE
from marc_keras.experiments.retrieval_table import RetrievalSettings, retrieval_table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--task", choices=("rerank", "retrieval"), required=True)
    args = parser.parse_args()
    run = MARCRun(args.run_dir, RunConfig.from_file(args.run_dir / "config.json"))
    inputs = downstream_inputs([run], run.config.evaluate, print)
    started = time.perf_counter()
    if args.task == "retrieval":
        rows = {RETRIEVAL_BASE: None, "profile": inputs.representations["profile"]}
        settings = RetrievalSettings(popularity_row=False)
        result = retrieval_table(inputs.split, inputs.features, rows, settings)
    else:
        rows = {RERANK_BASE: None, "profile": inputs.representations["profile"]}
        result = rerank_table(inputs.split, inputs.features, rows, RerankSettings())
    for row in result:
        print(json.dumps({k: v for k, v in row.items() if "paired_delta" in k or k == "name"}))
    print(f"wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
