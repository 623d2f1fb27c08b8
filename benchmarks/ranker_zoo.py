"""MARC Table 4 on ml-1m-half: do the vectors help every common CTR model? (issue 30)

Three steps on one MARC run, each adding to results/ranker-zoo-ml-1m-half.json, and
one that reads it:

  python benchmarks/ranker_zoo.py epochs --run-dir runs/marc-scale
      one epoch on all kar-tier training rows per ranker, alone and with the
      frozen vectors (the widest rows): seconds per epoch (target: under 60 s
      on 2 cores) with the machine's cpu_flags.
  python benchmarks/ranker_zoo.py grid --run-dir runs/marc-scale
      each ranker alone, seed 0, learning rate 1e-3 and 3e-3: validation-user
      AUC at the best epoch; the higher is that ranker's learning rate (test
      users are never read).
  python benchmarks/ranker_zoo.py table --run-dir runs/marc-scale --seeds 0 1 2 \
      [--mrl-runs runs/mrl] [--cross-fit-runs runs/compare-v3/runs/marc/seed{0,1,2}]
      rows: the ranker alone, lr-2, frozen, pca-128, marc-c, marc-o of the
      run, and from other runs of the same [data] (one for every seed, or one
      per seed: downstream seed i then reads run i): mrl (the compressed
      vectors of runs trained with Matryoshka losses) and mrl-cross-fit (their
      heads cross-fitted over training users, `training.cross_fit_folds`), and
      marc-c-cross-fit (MARC's cross-fitted heads); each ranker at its chosen
      learning rate, paired deltas against that ranker alone, the RESULTS.md
      section "ranker-zoo-ml-1m-half" and a plot. Each row records the runs
      its vectors came from, so rows of several calls (other --run-dir, other
      runs) stay told apart. Resumable: each ranker keeps a progress file in
      the run directory, and one per row from other runs, keyed by those
      runs' vectors.
  python benchmarks/ranker_zoo.py pairs [--pairs marc-c-cross-fit:mrl-cross-fit ...]
      reads the table only: per ranker, one row's test AUC minus another's,
      paired by seed (mean +- sample std), printed and written to the RESULTS.md
      section "ranker-zoo-pairs": the comparisons between vectors (MARC against
      MRL, each against PCA-128) that the deltas against the ranker alone do
      not give.

Every ranker uses the adaptor settings chosen for DCNv2 (downstream v3) and
KAR's architecture settings (`marc_keras.ranking.ranker_registry`).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import numpy as np

from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.config.downstream_config import RANKERS
from marc_keras.config.ranker_tier import TIERS
from marc_keras.experiments.marc_run import MARCRun, downstream_inputs
from marc_keras.ranking.ctr_metrics import auc
from marc_keras.ranking.downstream_evaluator import LOGISTIC_ROW, DownstreamEvaluator, mean_std
from marc_keras.ranking.ranker_registry import constructor_arguments, ranker_class
from marc_keras.utils.markdown_tables import downstream_markdown, mean_std_cell

RESULT = "ranker-zoo-ml-1m-half.json"
LEARNING_RATES = (1e-3, 3e-3)
TIER = "kar"
ROWS = (
    LOGISTIC_ROW,
    "frozen",
    "pca-128",
    "mrl",
    "mrl-cross-fit",
    "marc-c",
    "marc-o",
    "marc-c-cross-fit",
)
# Row comparisons `pairs` makes by default: (first, second), first minus second.
ROW_PAIRS = (
    ("marc-c-cross-fit", "mrl-cross-fit"),
    ("marc-c", "mrl"),
    ("marc-c-cross-fit", "pca-128"),
    ("mrl-cross-fit", "pca-128"),
    ("marc-c-cross-fit", "marc-o"),
    ("mrl-cross-fit", "marc-o"),
)
# The plot's lowest delta: a row below it is cut there and labelled with its
# value, so that one collapsed row does not flatten the differences of the rest.
PLOT_FLOOR = -0.006
# Rows read from other runs: option -> {row: the vectors it reads there}.
OTHER_RUN_ROWS = {
    "mrl_runs": {"mrl": "marc-c", "mrl-cross-fit": "marc-c-cross-fit"},
    "cross_fit_runs": {"marc-c-cross-fit": "marc-c-cross-fit"},
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("epochs", "grid", "table", "pairs"))
    parser.add_argument("--run-dir", type=Path, help="the MARC run (every step but pairs)")
    parser.add_argument(
        "--mrl-runs", type=Path, nargs="+", help="MARC runs trained with MRL losses"
    )
    parser.add_argument(
        "--cross-fit-runs",
        type=Path,
        nargs="+",
        help="MARC runs with cross-fitted heads (training.cross_fit_folds)",
    )
    parser.add_argument("--rankers", nargs="+", default=list(RANKERS), choices=RANKERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--rows",
        nargs="+",
        default=list(ROWS),
        choices=ROWS,
        help="table rows to train now (the ranker alone always); the others stay as they are",
    )
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument(
        "--pairs",
        type=_row_pair,
        nargs="+",
        default=list(ROW_PAIRS),
        help="pairs step: FIRST:SECOND row names, FIRST minus SECOND",
    )
    args = parser.parse_args()
    if args.step != "pairs" and args.run_dir is None:
        parser.error(f"the {args.step} step needs --run-dir (the MARC run whose vectors it reads)")
    return args


def _row_pair(text):
    first, _, second = text.partition(":")
    if first not in ROWS or second not in ROWS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give FIRST:SECOND with both among {', '.join(ROWS)}"
        )
    return first, second


def _load():
    path = RESULTS_DIR / RESULT
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(result):
    result["machine"] = machine_facts()
    result["cpu_flags"] = result["machine"]["cpu_flags"]
    write_json(RESULT, result)


def _runs(run_dirs):
    return [MARCRun(path, RunConfig.from_file(path / "config.json")) for path in run_dirs]


class OtherRunRow(NamedTuple):
    """A row read from other runs: their vectors' sources (the progress key), the
    per-seed vector provider, and the run directories (recorded with the row)."""

    sources: dict
    provider: object
    runs: list


def _other_run_rows(args, downstream):
    """Row -> `OtherRunRow` for the rows read from other runs."""
    data = _runs([args.run_dir])[0].config.data
    found = {}
    for option, option_rows in OTHER_RUN_ROWS.items():
        paths = getattr(args, option)
        asked = [row for row in option_rows if row in args.rows]
        if not paths or not asked:
            continue
        flag = "--" + option.replace("_", "-")
        runs = _runs(paths)
        for run in runs:
            if run.config.data != data:
                raise SystemExit(
                    f"{flag}: {run.run_dir} has other [data] settings than {args.run_dir} "
                    "(another split); give runs of the same data."
                )
        inputs = downstream_inputs(runs, downstream, log=print)
        for row in asked:
            vectors = option_rows[row]
            if vectors not in inputs.representations:
                raise SystemExit(
                    f"{flag}: {', '.join(map(str, paths))} hold no {vectors} vectors for the "
                    f"{row} row"
                    + (" (train with training.cross_fit_folds)" if "cross-fit" in vectors else "")
                )
            found[row] = OtherRunRow(inputs.sources, inputs.representations[vectors], paths)
    return found


def epochs(args):
    """Seconds of one training epoch on every kar-tier training row, per ranker."""
    import keras

    downstream = DownstreamConfig(tiers=(TIER,))
    inputs = downstream_inputs(_runs([args.run_dir]), downstream, log=print)
    features, tier = inputs.features, TIERS[TIER]
    training = features.tier_inputs(tier)["train"]
    labels = features.labels["train"][:, None]
    frozen = inputs.representations["frozen"](0)
    result = _load()
    timings = result.setdefault("epoch_seconds", {})
    for name in args.rankers:
        config = dataclasses.replace(downstream, ranker=name)
        for label, tables in (("alone", (None, None)), ("frozen", frozen)):
            ranker = ranker_class(name).from_features(
                features,
                tier,
                *tables,
                **constructor_arguments(config, config.adaptor_setting("frozen")),
            )
            ranker.compile(
                optimizer=keras.optimizers.AdamW(config.learning_rate),
                loss=keras.losses.BinaryCrossentropy(from_logits=True),
            )
            # A first short fit compiles nothing on torch but warms the allocator.
            ranker.fit(training, labels, batch_size=config.batch_size, epochs=1,
                       steps_per_epoch=2, verbose=0)  # fmt: skip
            started = time.perf_counter()
            ranker.fit(training, labels, batch_size=config.batch_size, epochs=1, verbose=0)
            seconds = time.perf_counter() - started
            timings.setdefault(name, {})[label] = round(seconds, 1)
            print(f"{name} {label}: {seconds:.1f} s per epoch ({len(labels)} rows)")
    result["epoch_rows"] = int(len(labels))
    result["epoch_note"] = args.note
    _save(result)


def grid(args):
    """Each ranker alone at every learning rate of the grid: validation AUC, seed 0."""
    downstream = DownstreamConfig(tiers=(TIER,), seeds=(0,))
    inputs = downstream_inputs(_runs([args.run_dir]), downstream, log=print)
    features, tier = inputs.features, TIERS[TIER]
    validation = features.tier_inputs(tier)["validation"]
    result = _load()
    cells = result.setdefault("grid", {})
    for name in args.rankers:
        for rate in LEARNING_RATES:
            key = f"{name}/{rate:g}"
            if key in cells:
                continue
            config = dataclasses.replace(downstream, ranker=name, learning_rate=rate)
            started = time.perf_counter()
            ranker, _, _, trained = DownstreamEvaluator(features, config).train_one(TIER, 0)
            logits = ranker.predict(validation, batch_size=4 * config.batch_size, verbose=0)
            cells[key] = {
                "validation_auc": auc(features.labels["validation"], logits[:, 0]),
                "epochs": trained,
                "seconds": time.perf_counter() - started,
            }
            print(f"{key}: validation AUC {cells[key]['validation_auc']:.4f}, {trained} epochs")
            _save(result)
    result["learning_rates"] = {
        name: max(LEARNING_RATES, key=lambda rate: cells[f"{name}/{rate:g}"]["validation_auc"])
        for name in RANKERS
        if all(f"{name}/{rate:g}" in cells for rate in LEARNING_RATES)
    }
    _save(result)


def table(args):
    """Table 4: every ranker at its chosen learning rate, the vector rows, 3 seeds."""
    result = _load()
    chosen = result.get("learning_rates", {})
    missing = [name for name in args.rankers if name not in chosen]
    if missing:
        raise SystemExit(f"run the grid step first: no learning rate for {', '.join(missing)}")
    downstream = DownstreamConfig(tiers=(TIER,), seeds=tuple(args.seeds))
    inputs = downstream_inputs(_runs([args.run_dir]), downstream, log=print)
    other_runs = _other_run_rows(args, downstream)
    rows = list(result.get("rows", []))
    for name in args.rankers:
        config = dataclasses.replace(downstream, ranker=name, learning_rate=chosen[name])
        evaluator = DownstreamEvaluator(
            inputs.features,
            config,
            progress_path=args.run_dir / f"ranker-zoo-{name}-progress.json",
            progress_fingerprint=json.dumps(inputs.sources),
        )
        started = time.perf_counter()
        representations = {
            name: None,
            **{
                row: inputs.representations[row]
                for row in args.rows
                if row in inputs.representations and row not in other_runs
            },
        }
        found = evaluator.evaluate(representations)
        base = {
            key: value
            for key, value in evaluator.recorded_results().items()
            if key.split("/")[1] == name
        }
        for row, other_row in other_runs.items():
            # Its own progress file, keyed by its runs' vectors; the ranker alone
            # is copied over for the paired deltas, not retrained.
            other = DownstreamEvaluator(
                inputs.features,
                config,
                progress_path=args.run_dir / f"ranker-zoo-{name}-{row}-progress.json",
                progress_fingerprint=json.dumps(other_row.sources),
            )
            other.add_results(base)
            found.extend(
                scored
                for scored in other.evaluate({name: None, row: other_row.provider})
                if scored["name"] == row
            )
        scored_names = {row["name"] for row in found}
        rows = [row for row in rows if row["ranker"] != name or row["name"] not in scored_names]
        for row in found:
            runs = other_runs[row["name"]].runs if row["name"] in other_runs else [args.run_dir]
            rows.append(
                {
                    "ranker": name,
                    "learning_rate": chosen[name],
                    **row,
                    "runs": [str(path) for path in runs],
                }
            )
        print(f"{name}: {time.perf_counter() - started:.0f} s")
        result["rows"] = rows
        _save(result)
    result.update(
        {
            "command": "python benchmarks/ranker_zoo.py " + " ".join(sys.argv[1:]),
            "note": args.note,
        }
    )
    _save(result)
    markdown = "\n\n".join(
        downstream_markdown([row for row in rows if row["ranker"] == name])
        for name in RANKERS
        if any(row["ranker"] == name for row in rows)
    )
    update_results_section(
        "ranker-zoo-ml-1m-half",
        f"## CTR model zoo (MARC Table 4), kar tier (issue 30)\n\n{markdown}\n\n"
        f"Test users, mean +- std over seeds {list(args.seeds)}; each ranker at its "
        f"learning rate chosen on validation users ({chosen}). Vectors per row: "
        + _row_sources(rows)
        + " (with one run per seed, downstream seed i reads the i-th; the ranker "
        "alone reads none)"
        + f". cpu_flags {result['cpu_flags']}. Last command (the rows it names; the others "
        f"come from earlier calls): `{result['command']}`. {args.note} "
        f"Plot: `results/ranker-zoo-ml-1m-half.png`.",
    )
    plot(rows, RESULTS_DIR / "ranker-zoo-ml-1m-half.png")


def _row_sources(rows):
    """'row from `run`, ...' for every row name in table order; where the rankers'
    rows of one name came from different runs, each runs' list names its rankers."""
    sources = {}
    for row in rows:
        if row["name"] in RANKERS or row["name"] == LOGISTIC_ROW:
            continue
        runs = ", ".join(f"`{path}`" for path in row["runs"])
        sources.setdefault(row["name"], {}).setdefault(runs, []).append(row["ranker"])
    return "; ".join(
        f"{name} from "
        + " and ".join(
            runs if len(sources[name]) == 1 else f"{runs} ({', '.join(rankers)})"
            for runs, rankers in sources[name].items()
        )
        for name in ROWS
        if name in sources
    )


def row_pair_deltas(rows, first, second):
    """Per ranker holding both rows: `first`'s test AUC minus `second`'s, paired by seed.

    Args:
        rows: the table's rows (`ranker`, `name`, `seeds`, `aucs`).
        first, second: row names.

    Returns:
        {ranker: {"paired_delta_mean", "paired_delta_std", "seeds"}} over the
        seeds both rows have, rankers in table order.
    """
    found = {}
    for ranker in RANKERS:
        pair = [
            next((row for row in rows if row["ranker"] == ranker and row["name"] == name), None)
            for name in (first, second)
        ]
        if None in pair:
            continue
        by_seed = [dict(zip(row["seeds"], row["aucs"])) for row in pair]
        seeds = [seed for seed in by_seed[0] if seed in by_seed[1]]
        if seeds:
            deltas = [by_seed[0][seed] - by_seed[1][seed] for seed in seeds]
            found[ranker] = {**mean_std("paired_delta", deltas), "seeds": seeds}
    return found


def pairs(args):
    """One row against another per ranker, paired by seed: printed and in RESULTS.md."""
    rows = _load().get("rows", [])
    rankers = [name for name in RANKERS if any(row["ranker"] == name for row in rows)]
    header = "| first - second | " + " | ".join(rankers) + " |"
    lines = [header, "|---" * (len(rankers) + 1) + "|"]
    for first, second in args.pairs:
        deltas = row_pair_deltas(rows, first, second)
        cells = [
            mean_std_cell(deltas[name], "paired_delta", signed=True) if name in deltas else "-"
            for name in rankers
        ]
        lines.append(f"| {first} - {second} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    print(markdown)
    update_results_section(
        "ranker-zoo-pairs",
        "## CTR model zoo: one vector against another (issue 30)\n\n"
        f"{markdown}\n\nTest AUC of the first row minus the second's, paired by seed, mean +- "
        "sample std over the seeds both rows have, from the rows of "
        f"`results/{RESULT}`. Vectors per row: {_row_sources(rows)}. "
        "Command: `python benchmarks/ranker_zoo.py " + " ".join(sys.argv[1:]) + "`.",
    )


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rankers = [name for name in RANKERS if any(row["ranker"] == name for row in rows)]
    names = [
        name for name in ROWS if name != LOGISTIC_ROW and any(row["name"] == name for row in rows)
    ]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        found = [
            next((r for r in rows if r["ranker"] == ranker and r["name"] == name), None)
            for ranker in rankers
        ]
        positions = np.arange(len(rankers)) + index * width
        means = np.array([row["paired_delta_mean"] if row else np.nan for row in found])
        cut = means < PLOT_FLOOR
        axis.bar(
            positions,
            np.where(cut, PLOT_FLOOR, means),
            width,
            yerr=[
                row["paired_delta_std"] if row and not low else 0.0 for row, low in zip(found, cut)
            ],
            label=name,
        )
        for position, mean in zip(positions[cut], means[cut]):
            axis.text(position, PLOT_FLOOR, f"{mean:+.3f}", rotation=90, ha="center",
                      va="bottom", fontsize=7, color="white")  # fmt: skip
    axis.set_ylim(bottom=PLOT_FLOOR)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks(np.arange(len(rankers)) + 0.4 - width / 2, rankers)
    axis.set_ylabel("test AUC minus the ranker alone's (paired)")
    axis.set_title(f"bars below {PLOT_FLOOR} are cut and labelled with their mean", fontsize=8)
    axis.legend(ncol=len(names), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main():
    args = parse_args()
    {"epochs": epochs, "grid": grid, "table": table, "pairs": pairs}[args.step](args)


if __name__ == "__main__":
    main()
