"""Re-ranking and retrieval tables, warm and cold, from `marc-keras evaluate --task` (issue 29).

Runs the CLI for one task on a warm run (trained without cold items) and a
cold run (trained with `evaluate.cold_item_share`), times each command, and
gathers both reports into one results file with the machine facts, a
RESULTS.md section and a plot of every row's paired delta against the model
without vectors. `--reuse` reads the reports already in the run directories
(and the wall times given with `--wall-s`) instead of running the CLI.

Usage:
  python benchmarks/stage_tables.py --task retrieval --warm-run runs/demo-96 \
      --cold-run runs/demo-cold --note "what else ran"
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

BASELINE = {"rerank": "prm", "retrieval": "base"}
BUDGET = ["--set", "evaluate.seeds=[0,1,2]", "--set", "evaluate.max_epochs=10",
          "--set", "evaluate.patience=2"]  # fmt: skip


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(BASELINE))
    parser.add_argument("--warm-run", required=True, type=Path)
    parser.add_argument("--cold-run", type=Path, help="leave out for a warm-only table")
    parser.add_argument("--reuse", action="store_true", help="read the existing reports")
    parser.add_argument("--wall-s", type=float, nargs="+", metavar="SECONDS",
                        help="with --reuse: the warm (and cold) CLI wall times")  # fmt: skip
    parser.add_argument("--name", help="results file stem (default {task}-ml-1m-half)")
    parser.add_argument("--note", default="")
    return parser.parse_args()


def run_cli(task, run_dir):
    """`marc-keras evaluate --task` on a run; its wall time in seconds."""
    command = ["marc-keras", "evaluate", "--run-dir", str(run_dir), "--task", task, *BUDGET]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=os.environ)
    return time.perf_counter() - started


def main():
    args = parse_args()
    facts = machine_facts()
    name = args.name or f"{args.task}-ml-1m-half"
    reports, walls = {}, {}
    tables = [("warm", args.warm_run, f"evaluate-{args.task}")]
    if args.cold_run:
        tables.append(("cold", args.cold_run, f"evaluate-{args.task}-cold"))
    for split, run_dir, stem in tables:
        if not args.reuse:
            walls[split] = run_cli(args.task, run_dir)
        reports[split] = json.loads((run_dir / f"{stem}.json").read_text())
        if reports[split]["split"] != split:
            raise SystemExit(f"{run_dir}/{stem}.json is a {reports[split]['split']} table.")
    if args.reuse and args.wall_s:
        walls = dict(zip(reports, args.wall_s))
    rows = [row for split in reports for row in reports[split]["rows"]]
    result = {
        "what": f"{args.task} on ml-1m-half, test users; epoch chosen on validation users",
        "command": "python benchmarks/stage_tables.py " + " ".join(sys.argv[1:]),
        "cli": f"marc-keras evaluate --run-dir RUN --task {args.task} " + " ".join(BUDGET),
        "runs": {split: str(run_dir) for split, run_dir, _ in tables},
        "cold_item_share": reports["cold"]["cold_item_share"] if "cold" in reports else None,
        "runs_trained_on_cold_items": (
            reports["cold"]["runs_trained_on_cold_items"] if "cold" in reports else None
        ),
        "settings": reports["warm"]["settings"],
        "cli_wall_s": walls,
        "note": args.note,
        "machine": facts,
        "cpu_flags": facts["cpu_flags"],
        "rows": rows,
    }
    write_json(f"{name}.json", result)
    plot(result, args.task, RESULTS_DIR / f"{name}.png")
    table = markdown(result, args.task, name)
    print(table)
    update_results_section(name, table)


def plot(result, task, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marc_keras.experiments.stage_evaluation import COLUMNS

    metric = COLUMNS[task][1][0]
    reference = BASELINE[task]
    splits = list(result["runs"])
    figure, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for axis, split in zip(axes[0], splits):
        rows = [row for row in result["rows"] if row["split"] == split]
        key = f"paired_delta_vs_{reference}_{metric}"
        axis.barh(
            [row["name"] for row in rows],
            [row[f"{key}_mean"] for row in rows],
            xerr=[row[f"{key}_std"] for row in rows],
            color=["tab:gray" if row["name"] == reference else "tab:blue" for row in rows],
        )
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.invert_yaxis()
        axis.set_title(f"{split} items: test {metric.upper()} minus {reference}'s, same seed")
        axis.set_xlabel("paired delta (mean +- std over 3 seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown(result, task, name):
    from marc_keras.experiments.stage_evaluation import COLUMNS
    from marc_keras.utils.markdown_tables import stage_markdown

    metrics = COLUMNS[task][0]
    walls = ", ".join(
        f"{split} {seconds / 60:.1f} min" for split, seconds in result["cli_wall_s"].items()
    )
    title = {"rerank": "Re-ranking (PRM, KAR's lists)", "retrieval": "Two-tower retrieval"}[task]
    cold = "cold" in result["runs"]
    cold_rows = (
        f"cold rows: `{result['runs']['cold']}`, trained with evaluate.cold_item_share = "
        f"{result['cold_item_share']} (MARC never saw a cold item's pair)"
        if cold
        else "no cold table"
    )
    return "\n".join(
        [
            f"## {title}, {'warm and cold' if cold else 'warm'} items, `{name}` (issue 29)",
            "",
            stage_markdown(result["rows"], metrics, COLUMNS[task][1], BASELINE[task]),
            "",
            f"Test users, mean +- std over 3 seeds; paired deltas against `{BASELINE[task]}` "
            f"(same model without vectors, same seed). Warm rows: `{result['runs']['warm']}`; "
            f"{cold_rows}. CLI wall time per table: {walls or 'not measured'}. "
            f"Machine: {result['machine']['cpu']}, cpu_flags {result['cpu_flags']}, 2 threads. "
            f"CLI: `{result['cli']}`. "
            f"Command: `{result['command']}`. {result['note']} "
            f"Plot: `results/{name}.png`.",
        ]
    )


if __name__ == "__main__":
    main()
