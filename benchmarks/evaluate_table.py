"""Records a `marc-keras evaluate` result in benchmarks/RESULTS.md and results/.

Usage: python benchmarks/evaluate_table.py RUN_DIR [RUN_DIR ...] --name evaluate-ml-1m-half \
    --how "what produced the runs" --note "what else ran"
The first RUN_DIR holds evaluate.json; every RUN_DIR's metrics.json gives its fit times.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--name", default="evaluate-ml-1m-half")
    parser.add_argument("--how", default="", help="the commands that trained the runs")
    parser.add_argument("--note", default="", help="what else ran during the measurement")
    args = parser.parse_args()
    report = json.loads((args.run_dirs[0] / "evaluate.json").read_text())
    fits = [json.loads((run / "metrics.json").read_text()) for run in args.run_dirs]
    configs = [json.loads((run / "config.json").read_text()) for run in args.run_dirs]
    config = configs[0]
    result = {
        "dataset": "ml-1m-half",
        "backbone": "all-MiniLM-L6-v2",
        "seeds": report["seeds"],
        "rows": [
            {
                key: row[key]
                for key in (
                    "name",
                    "auc_mean",
                    "auc_std",
                    "logloss_mean",
                    "logloss_std",
                    "aucs",
                    "loglosses",
                    "seconds",
                )
            }
            | ({"relaimpr": row["relaimpr"]} if "relaimpr" in row else {})
            for row in report["rows"]
        ],
        "marc_fit": [{"seed": c["training"]["seed"], **fit} for c, fit in zip(configs, fits)],
        "config": config,
        "downstream": report["downstream"],
        "machine": machine_facts(),
    }
    write_json(f"{args.name}.json", result)
    table = [
        f"| representation | test AUC (mean +- std, {len(report['seeds'])} seeds) "
        "| test logloss | RelaImpr vs dcnv2 | downstream wall (s) |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        relaimpr = f"{100 * row['relaimpr']:+.2f}%" if "relaimpr" in row else "-"
        table.append(
            f"| {row['name']} | {row['auc_mean']:.4f} +- {row['auc_std']:.4f} | "
            f"{row['logloss_mean']:.4f} +- {row['logloss_std']:.4f} | {relaimpr} "
            f"| {row['seconds']:.0f} |"
        )
    fit_lines = [
        f"  - seed {c['training']['seed']}: MARC's own test AUC {fit['test']['auc']:.4f} on "
        f"{fit['test']['pairs']} pairs, fit {fit['timings']['fit_s']:.0f}s, "
        f"tokenize {fit['timings']['tokenize_s']:.0f}s"
        for c, fit in zip(configs, fits)
    ]
    markdown = "\n".join(
        [
            "## Downstream table on ml-1m-half (MiniLM)",
            "",
            *table,
            "",
            f"- runs: {len(args.run_dirs)} MARC trainings; downstream seed i uses run i's vectors; "
            f"downstream settings {report['downstream']}",
            f"- MARC settings: model {config['model']}, training {config['training']}",
            "- MARC fits:",
            *fit_lines,
            f"- how the runs were made: {args.how or 'see the command below'}",
            "- evaluate: `marc-keras evaluate "
            f"{' '.join('--run-dir ' + str(run) for run in args.run_dirs)}"
            f" --set evaluate.seeds={report['seeds']}`",
            f"- machine for evaluate: {result['machine']['cpu']}, "
            f"{result['machine']['cores']} cores; "
            f"also running: {args.note or 'nothing recorded'}",
        ]
    )
    update_results_section(args.name, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
