"""PRM's batch size and learning rate, chosen on validation lists (issue 29).

The re-ranking table took 38.8 min from the CLI on the marc-scale run, over
its 30-minute target. Lists of 1,024 hold more candidates than the catalogue
has items, so PRM then projects the item-vector table once per step instead
of once per candidate (`ExpertAdaptor.call_shared`); larger batches also mean
fewer, better-filled steps. Whether the larger batch costs quality, and which
learning rate it needs, is read here on validation lists only (test metrics
are computed by the shared table code but never read by this script).

For each setting (batch:learning_rate) and row (PRM alone and with the given
rows' vectors), seeds 0 and 1: the validation MAP@5 of the chosen epoch, the
epochs and the wall time; the setting's mean validation MAP@5 over rows and
seeds, paired against the first setting given (KAR's 256:1e-3 in the
recorded run). Resumable:
finished cells are kept in the result file.

Usage:
  python benchmarks/rerank_settings.py --run-dir runs/marc-scale \
      --settings 256:1e-3 512:2e-3 1024:2e-3 1024:4e-3 --rows frozen marc-c
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import numpy as np

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun, downstream_inputs
from marc_keras.experiments.rerank_table import BASELINE_ROW, RerankSettings, rerank_table

RESULT = "rerank-settings-ml-1m-half.json"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--settings", nargs="+", required=True, help="batch:learning_rate")
    parser.add_argument("--rows", nargs="+", default=["frozen", "marc-c"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--note", default="", help="what else ran on the machine")
    return parser.parse_args()


def main():
    args = parse_args()
    run = MARCRun(args.run_dir, RunConfig.from_file(args.run_dir / "config.json"))
    inputs = downstream_inputs([run], run.config.evaluate, print)
    providers = {BASELINE_ROW: None, **{row: inputs.representations[row] for row in args.rows}}
    path = RESULTS_DIR / RESULT
    result = json.loads(path.read_text()) if path.is_file() else {}
    cells = result.setdefault("cells", {})
    selection = RerankSettings().selection_metric
    for setting in args.settings:
        batch, rate = setting.split(":")
        settings = dataclasses.replace(
            RerankSettings(),
            batch_size=int(batch),
            learning_rate=float(rate),
            seeds=tuple(args.seeds),
        )
        for row, provider in providers.items():
            key = f"{setting}/{row}"
            if key in cells:
                continue
            started = time.perf_counter()
            (table_row,) = rerank_table(
                inputs.split, inputs.features, {row: provider}, settings, log=print
            )
            # Warm lists: one fold, so one value per seed.
            cells[key] = {
                "validation": [seed for (seed,) in table_row[f"validation_{selection}s"]],
                "epochs": [seed for (seed,) in table_row["epochs"]],
                "wall_s": time.perf_counter() - started,
            }
            print(f"{key}: validation {selection} {cells[key]['validation']}", flush=True)
            result["machine"] = machine_facts()
            write_json(RESULT, result)
    summary = []
    reference = args.settings[0]
    for setting in args.settings:
        mine = [cells[f"{setting}/{row}"] for row in providers]
        theirs = [cells[f"{reference}/{row}"] for row in providers]
        deltas = [
            a - b
            for cell, base in zip(mine, theirs)
            for a, b in zip(cell["validation"], base["validation"])
        ]
        summary.append(
            {
                "setting": setting,
                f"validation_{selection}_mean": float(
                    np.mean([value for cell in mine for value in cell["validation"]])
                ),
                "paired_delta_mean": float(np.mean(deltas)),
                "paired_delta_std": float(np.std(deltas, ddof=1)),
                "wall_s": sum(cell["wall_s"] for cell in mine),
                "mean_epochs": float(np.mean([e for cell in mine for e in cell["epochs"]])),
            }
        )
    result.update(
        summary=summary,
        rows=list(providers),
        seeds=args.seeds,
        run=str(args.run_dir),
        command="python benchmarks/rerank_settings.py " + " ".join(sys.argv[1:]),
        note=args.note,
        machine=machine_facts(),
    )
    result["cpu_flags"] = result["machine"]["cpu_flags"]
    write_json(RESULT, result)
    lines = [
        f"| batch:lr | validation {selection} | paired vs {reference} | wall s | mean epochs |",
        "|---|---|---|---|---|",
    ]
    for entry in summary:
        lines.append(
            f"| {entry['setting']} | {entry[f'validation_{selection}_mean']:.4f} | "
            f"{entry['paired_delta_mean']:+.4f} +- {entry['paired_delta_std']:.4f} | "
            f"{entry['wall_s']:.0f} | {entry['mean_epochs']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    update_results_section(
        "rerank-settings-ml-1m-half",
        f"## PRM batch size and learning rate, on validation lists (issue 29)\n\n{table}\n\n"
        f"Rows {list(providers)} of run `{args.run_dir}`, seeds {args.seeds}; paired deltas "
        f"over rows x seeds. cpu_flags {result['cpu_flags']}. Command: `{result['command']}`. "
        f"{args.note}",
    )


if __name__ == "__main__":
    main()
