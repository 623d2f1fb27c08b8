"""Records a `marc-keras compare` table and/or a `marc-keras probe` MRA curve in
RESULTS.md and results/.

Usage:
    python benchmarks/method_study.py --compare runs/compare --probe runs/probe \
        --name compare-ml-1m-half --how "the commands" --note "what else ran"
    python benchmarks/method_study.py --probe runs/probe-smollm2 --name mra-smollm2 --title "..."

`--compare DIR` reads DIR/compare.json and writes results/NAME.json (the
evaluate table's schema plus RelaImpr against MARC-C and the one-std verdict);
`--probe DIR` copies DIR/mra.png and DIR/probe.json to results/ as
mra-DATASET.png/json (or PROBE_NAME.png/json).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

from marc_keras.experiments.comparison import (
    REFERENCE_ROW,
    add_paired_deltas_vs,
    beats_by_one_std,
    to_markdown,
)
from marc_keras.utils.markdown_tables import mra_markdown


def verdicts(rows, reference_name=REFERENCE_ROW):
    """One line per row: does the reference row (MARC-C by default) beat it by more
    than one standard deviation (its own tier's reference row), and by more than
    the std of their seed-paired AUC differences?"""
    references = {row.get("tier"): row for row in rows if row["name"] == reference_name}
    label = "MARC-C" if reference_name == REFERENCE_ROW else f"`{reference_name}`"
    lines = []
    for row in rows:
        reference = references.get(row.get("tier"))
        if reference is None or row is reference:
            continue
        where = f"[{row['tier']}] " if row.get("tier") else ""
        margin = reference["auc_mean"] - row["auc_mean"]
        spread = max(reference["auc_std"], row["auc_std"])
        if len(row["aucs"]) < 2:
            lines.append(
                f"- {where}{label} vs `{row['name']}`: AUC margin {margin:+.4f}; "
                "one seed, no std to judge it by"
            )
            continue
        verdict = "**beats**" if beats_by_one_std(reference, row) else "does **not** beat"
        lines.append(
            f"- {where}{label} {verdict} `{row['name']}` by more than one std: "
            f"AUC margin {margin:+.4f} vs std {spread:.4f}"
        )
    add_paired_deltas_vs(rows, reference_name)
    paired = f"paired_delta_vs_{reference_name}"
    for row in rows:
        reference = references.get(row.get("tier"))
        if reference is None or row is reference or len(row["aucs"]) < 2:
            continue
        # The row's delta is row minus the reference: negate it to read reference minus row.
        mean, std = -row[f"{paired}_mean"], row[f"{paired}_std"]
        verdict = "above" if mean > std else "not above"
        lines.append(
            f"- [{row['tier']}] {label} minus `{row['name']}`, paired by seed: "
            f"{mean:+.4f} +- {std:.4f} ({verdict} its std)"
        )
    return lines


def record_compare(compare_dir, name, references=(REFERENCE_ROW,)):
    report = json.loads((compare_dir / "compare.json").read_text())
    rows = report["rows"]
    # Before the JSON is written: each reference adds its paired deltas to every row.
    judged = [line for reference in references for line in [*verdicts(rows, reference), ""]]
    config = report["config"]
    write_json(
        f"{name}.json",
        {
            "dataset": Path(report["dataset"]).name,
            "backbone": report["backbone"],
            "seeds": report["seeds"],
            "rows": rows,
            "methods": report["methods"],
            "fit_seconds": report["fit_seconds"],
            "config": config,
            "downstream": config["evaluate"],
            "machine": machine_facts(),
        },
    )
    fits = ", ".join(
        f"{run} {sum(seconds) / len(seconds):.0f}s"
        for run, seconds in report["fit_seconds"].items()
    )
    return [
        f"Every method: {report['backbone']}, model {config['model']}, "
        f"training {config['training']}; "
        f"downstream DCNv2 {config['evaluate']}. Training seed i feeds downstream seed i.",
        "",
        to_markdown(rows),
        "",
        *judged,
        f"- mean MARC-trainer fit time per run "
        f"({config['training']['threads'] or 'default'} torch threads): {fits}",
    ]


def record_probe(probe_dir, name):
    report = json.loads((probe_dir / "probe.json").read_text())
    shutil.copyfile(probe_dir / "mra.png", RESULTS_DIR / f"{name}.png")
    write_json(f"{name}.json", report | {"machine": machine_facts()})
    curves = ", ".join(
        f"{method['method']} ({method['num_layers']} layers x {method['hidden_dim']}-d)"
        for method in report["methods"]
    )
    return [
        f"![MRA curve](results/{name}.png)",
        "",
        f"Curves: {curves}; downstream {report['downstream']}.",
        "",
        mra_markdown(report["rows"], report["markers"]),
    ]


def main():
    # The summary spans two docstring lines: join them back into one sentence.
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--compare", type=Path, help="a `marc-keras compare` output directory")
    parser.add_argument("--probe", type=Path, help="a `marc-keras probe` output directory")
    parser.add_argument(
        "--name", required=True, help="RESULTS.md section and results/NAME.json of the table"
    )
    parser.add_argument(
        "--probe-name", help="results/ name of the probe files (default mra-<dataset of --name>)"
    )
    parser.add_argument(
        "--references",
        nargs="+",
        default=[REFERENCE_ROW],
        help="rows whose verdicts against every other row the section lists (default marc-c)",
    )
    parser.add_argument("--title", default="", help="section heading")
    parser.add_argument("--how", default="", help="the commands that produced the directories")
    parser.add_argument("--note", default="", help="what else ran during the measurement")
    args = parser.parse_args()
    if not (args.compare or args.probe):
        parser.error("give --compare and/or --probe")
    lines = [f"## {args.title or args.name}", ""]
    if args.compare:
        lines += record_compare(args.compare, args.name, args.references)
    if args.probe:
        probe_name = args.probe_name or args.name.replace("compare-", "mra-")
        lines += ["", *record_probe(args.probe, probe_name)]
    facts = machine_facts()
    lines += [
        "",
        f"- commands: {args.how or 'not recorded'}",
        f"- machine: {facts['cpu']}, {facts['cores']} cores, flags {facts['cpu_flags']}, "
        f"{facts['versions']}; "
        f"also running: {args.note or 'nothing recorded'}",
    ]
    markdown = "\n".join(lines)
    update_results_section(args.name, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
