"""Re-ranking table (MARC Table 3) on a run's data: PRM alone and per vector row (issue 29).

KAR's protocol (`marc_keras.data.rerank_lists`, `marc_keras.ranking.list_metrics`):
lists of 4 rated items of a user's ranker-side sequence padded to 10 with
random catalogue items, PRM per row and seed with early stopping on
validation MAP@5, MAP@k and NDCG@k on test users. Rows: `prm` (item id and
genre fields only), the frozen backbone's vectors, their PCA, the run's
MARC-O and MARC-C and, if `--heads-vectors` names a file of
`benchmarks/marc_selection.py`, those heads' vectors.

Usage: python benchmarks/rerank_v1.py --run-dir runs/demo-v3 --threads 2 --note "what else ran"
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import numpy as np
import torch

from marc_keras.config import RunConfig
from marc_keras.experiments.downstream_rows import vector_provider
from marc_keras.experiments.marc_run import MARCRun, downstream_inputs
from marc_keras.experiments.rerank_table import BASELINE_ROW, RerankSettings, rerank_table
from marc_keras.experiments.stage_evaluation import COLUMNS
from marc_keras.utils.markdown_tables import stage_markdown

ROWS = ("frozen", "pca-128", "marc-o", "marc-c")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--heads-vectors", type=Path, help="an npz of marc_selection's heads")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument(
        "--rows", nargs="+", default=list(ROWS), choices=ROWS, help="vector rows besides prm"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="rerank-ml-1m-half")
    parser.add_argument("--note", default="")
    return parser.parse_args()


def main():
    args = parse_args()
    facts = machine_facts()
    torch.set_num_threads(args.threads)
    run = MARCRun(args.run_dir, RunConfig.from_file(args.run_dir / "config.json"))
    prepared = downstream_inputs([run], run.config.evaluate)
    rows = {BASELINE_ROW: None, **{name: prepared.representations[name] for name in args.rows}}
    if args.heads_vectors:
        with np.load(args.heads_vectors) as stored:
            heads = tuple(
                (stored[f"{tower}_ids"], stored[f"{tower}s"]) for tower in ("user", "item")
            )
        rows[f"heads-{args.heads_vectors.stem}"] = vector_provider(
            prepared.features, lambda seed: heads
        )
    settings = RerankSettings(
        seeds=tuple(args.seeds), max_epochs=args.max_epochs, patience=args.patience
    )
    results = rerank_table(prepared.split, prepared.features, rows, settings)
    report = {
        "what": "PRM re-ranking on KAR's lists, test users; epoch chosen on validation MAP@5",
        "command": "python benchmarks/rerank_v1.py " + " ".join(sys.argv[1:]),
        "note": args.note,
        "settings": dataclasses.asdict(settings),
        "machine": facts,
        "cpu_flags": facts["cpu_flags"],
        "rows": results,
    }
    write_json(f"{args.name}.json", report)
    table = markdown(report, args)
    print(table)
    update_results_section(args.name, table)


def markdown(report, args):
    lines = [
        f"## Re-ranking with PRM on KAR's lists, `{args.run_dir}` (issue 29)",
        "",
        stage_markdown(report["rows"], COLUMNS["rerank"][0], ("map@5", "ndcg@5"), BASELINE_ROW),
    ]
    lines += [
        "",
        f"Means over seeds {list(args.seeds)} (PRM trained per seed; the lists are fixed); "
        f"at most {args.max_epochs} epochs, patience {args.patience}. "
        f"Machine: {report['machine']['cpu']}, cpu_flags {report['cpu_flags']}, "
        f"{args.threads} threads. Command: `{report['command']}`. {report['note']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
