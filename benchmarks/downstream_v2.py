"""Downstream evaluation v2 on ml-1m-half: ranker speed, learning-rate choice, the table.

Three steps, each adding its figures to results/downstream-v2-ml-1m-half.json:

  python benchmarks/downstream_v2.py throughput --rows 100000
      rows/s of one DCNv2 epoch (training, validation and test scoring) with the code
      before v2 (read from git at --before-commit) and now, interleaved.
  python benchmarks/downstream_v2.py grid --learning-rates 1e-3 3e-3 --batch-sizes 1024 4096
      DCNv2 alone on validation users, all training rows, early stopping:
      the learning rate and batch size every row of the table then uses.
  python benchmarks/downstream_v2.py rank --ranks full 64 32 --tiers kar full
      DCNv2 alone on validation users at the chosen learning rate and batch size,
      with full-rank and low-rank cross layers: the rank every row then uses.
  python benchmarks/downstream_v2.py table --run-dir runs/demo-v2 --seeds 0 1 2
      `evaluate_runs` with the protocol's defaults and the chosen settings.
"""

import argparse
import dataclasses
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
import numpy as np

from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.config.ranker_tier import TIERS
from marc_keras.experiments.marc_run import MARCRun, build_split, evaluate_runs
from marc_keras.ranking.ctr_metrics import auc
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.ranking.ranking_features import RankingFeatures
from marc_keras.utils.markdown_tables import downstream_markdown

RESULT = "downstream-v2-ml-1m-half.json"
BEFORE_COMMIT = "deb709f"


def _update(values):
    path = RESULTS_DIR / RESULT
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(values)
    current["machine"] = machine_facts()
    write_json(RESULT, current)
    return current


def _features(config):
    split, interactions = build_split(config, with_interactions=True)
    return split, RankingFeatures(split, interactions)


def _ranker_before():
    """The DCNv2Ranker class as it was at BEFORE_COMMIT, loaded from git."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:marc_keras/ranking/dcn_v2_ranker.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("dcn_v2_ranker_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "dcn_v2_ranker_before.py", "exec"), module.__dict__)
    return module.DCNv2Ranker


def _epoch_before(ranker_class, features, rows):
    # What DownstreamEvaluator.train_one did per epoch before v2: Keras' AUC
    # metric on every training batch and on validation_data, batch 1024.
    ranker = ranker_class.from_features(features)
    ranker.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.AUC(from_logits=True, name="auc")],
    )
    inputs, labels = features.inputs, features.labels
    started = time.perf_counter()
    ranker.fit(
        {name: array[rows] for name, array in inputs["train"].items()},
        labels["train"][rows, None],
        batch_size=1024,
        epochs=1,
        validation_data=(inputs["validation"], labels["validation"][:, None]),
        verbose=0,
    )
    auc(labels["test"], ranker.predict(inputs["test"], batch_size=4096, verbose=0)[:, 0])
    return time.perf_counter() - started


def _epoch_after(features, rows, tier, batch_size, cross_projection_dim):
    # One epoch of today's train_one: training, exact validation AUC, test scoring.
    config = DownstreamConfig(
        max_epochs=1,
        batch_size=batch_size,
        seeds=(0,),
        tiers=(tier,),
        cross_projection_dim=cross_projection_dim,
    )
    evaluator = DownstreamEvaluator(features, config, log=lambda _: None)
    evaluator.train_rows = lambda seed: rows
    started = time.perf_counter()
    evaluator.train_one(tier, 0)
    return time.perf_counter() - started


def throughput(args, config):
    _, features = _features(config)
    rows = np.arange(min(args.rows, len(features.labels["train"])))
    ranker_before = _ranker_before()
    for tier in TIERS.values():
        features.tier_inputs(tier)  # built once, outside the timing
    rank = DownstreamConfig().cross_projection_dim
    settings = {f"after-{tier}": (tier, rank) for tier in TIERS}
    settings["after-full-full-rank"] = ("full", None)
    timings = {"before": [], **{name: [] for name in settings}}
    for repeat in range(args.repeats):
        timings["before"].append(_epoch_before(ranker_before, features, rows))
        for name, (tier, cross_rank) in settings.items():
            timings[name].append(_epoch_after(features, rows, tier, args.batch_size, cross_rank))
        print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in timings.items()))
    rates = {name: len(rows) / statistics.median(values) for name, values in timings.items()}
    result = _update(
        {
            "ranker_rows_per_s_before": rates["before"],
            "ranker_rows_per_s_after": rates["after-full"],
            "ranker_rows_per_s_after_kar": rates["after-kar"],
            "ranker_rows_per_s_after_full_rank": rates["after-full-full-rank"],
            "ranker_speedup": rates["after-full"] / rates["before"],
            "ranker_throughput": {
                "rows": len(rows),
                "repeats": args.repeats,
                "before": f"commit {BEFORE_COMMIT}: full features, batch 1024, Keras AUC metric",
                "after": (
                    f"full tier (same features), batch {args.batch_size}, exact val AUC, "
                    f"cross rank {rank or 'full'} (after-full-full-rank: full-rank crosses)"
                ),
                "seconds": timings,
                "note": args.note,
                "command": " ".join(sys.argv),
            },
        }
    )
    print(json.dumps({k: v for k, v in result.items() if k.startswith("ranker_")}, indent=2))


def _validation_run(features, tier, **settings):
    """DCNv2 alone on a tier (seed 0, protocol defaults but `settings`): validation AUC."""
    config = dataclasses.replace(DownstreamConfig(), seeds=(0,), tiers=(tier,), **settings)
    evaluator = DownstreamEvaluator(features, config, log=lambda _: None)
    started = time.perf_counter()
    ranker, _, _, epochs = evaluator.train_one(tier, 0)
    inputs = features.tier_inputs(TIERS[tier])["validation"]
    scores = ranker.predict(inputs, batch_size=4096, verbose=0)[:, 0]
    return {
        "validation_auc": auc(features.labels["validation"], scores),
        "epochs": epochs,
        "seconds": time.perf_counter() - started,
    }


def grid(args, config):
    _, features = _features(config)
    tier = args.tier
    results = []
    for batch_size in args.batch_sizes:
        for learning_rate in args.learning_rates:
            result = {
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                **_validation_run(
                    features, tier, batch_size=batch_size, learning_rate=learning_rate
                ),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    best = max(results, key=lambda result: result["validation_auc"])
    _update(
        {
            "learning_rate_grid": args.learning_rates,
            "batch_size_grid": args.batch_sizes,
            "learning_rate_chosen": best["learning_rate"],
            "batch_size_chosen": best["batch_size"],
            "grid": {
                "tier": tier,
                "row": "dcnv2 (no vectors), seed 0, all training rows, validation users",
                "results": results,
                "command": " ".join(sys.argv),
            },
        }
    )
    print(f"chosen: learning rate {best['learning_rate']}, batch size {best['batch_size']}")


def _rank_label(rank):
    return "full" if rank is None else rank


def rank(args, config):
    current = json.loads((RESULTS_DIR / RESULT).read_text())
    _, features = _features(config)
    ranks = [None if rank == "full" else int(rank) for rank in args.ranks]
    results = []
    for tier in args.tiers:
        for cross_rank in ranks:
            result = {
                "tier": tier,
                "cross_projection_dim": _rank_label(cross_rank),
                **_validation_run(
                    features,
                    tier,
                    batch_size=current["batch_size_chosen"],
                    learning_rate=current["learning_rate_chosen"],
                    cross_projection_dim=cross_rank,
                ),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    best = {
        tier: max(r["validation_auc"] for r in results if r["tier"] == tier) for tier in args.tiers
    }
    # The cheapest rank within the tolerance of the best on every tier.
    acceptable = [
        cross_rank
        for cross_rank in ranks
        if all(
            r["validation_auc"] >= best[r["tier"]] - args.tolerance
            for r in results
            if r["cross_projection_dim"] == _rank_label(cross_rank)
        )
    ]
    chosen = min(
        acceptable, key=lambda cross_rank: float("inf") if cross_rank is None else cross_rank
    )
    _update(
        {
            "cross_rank_grid": {
                "row": "dcnv2 (no vectors), seed 0, all training rows, validation users",
                "rule": f"lowest rank within {args.tolerance} val AUC of the best, every tier",
                "results": results,
                "command": " ".join(sys.argv),
            },
            "cross_projection_dim_chosen": _rank_label(chosen),
        }
    )
    print(f"chosen cross rank: {_rank_label(chosen)}")


def plot_paired_deltas(rows, path):
    """Bars of each row's paired AUC delta vs DCNv2 alone (mean +- std), one panel per tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = list(dict.fromkeys(row["tier"] for row in rows))
    figure, axes = plt.subplots(1, len(tiers), figsize=(6 * len(tiers), 4), squeeze=False)
    for axis, tier in zip(axes[0], tiers):
        shown = [row for row in rows if row["tier"] == tier and row["name"] != "dcnv2"]
        positions = np.arange(len(shown))
        axis.bar(
            positions,
            [row["paired_delta_mean"] for row in shown],
            yerr=[row["paired_delta_std"] for row in shown],
            color=["tab:green" if row["lift"] else "tab:gray" for row in shown],
            capsize=3,
        )
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xticks(positions, [row["name"] for row in shown], rotation=45, ha="right")
        axis.set_title(f"{tier} tier: test AUC minus DCNv2 alone (same seed)")
        axis.set_ylabel("paired AUC delta")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def table(args, config):
    current = json.loads((RESULTS_DIR / RESULT).read_text())
    # The protocol's defaults (not the demo config's shrunk [evaluate]).
    downstream = DownstreamConfig(
        seeds=tuple(args.seeds),
        learning_rate=current["learning_rate_chosen"],
        batch_size=current["batch_size_chosen"],
    )
    run = MARCRun.open(args.run_dir, config)
    started = time.perf_counter()
    rows = evaluate_runs([run], downstream=downstream)
    table_wall_s = time.perf_counter() - started
    report = json.loads((Path(args.run_dir) / "evaluate.json").read_text())
    keep = (
        "tier", "name", "auc_mean", "auc_std", "paired_delta_mean", "paired_delta_std",
        "lift", "seeds", "aucs", "paired_deltas", "logloss_mean", "logloss_std", "epochs",
        "seconds", "relaimpr",
    )  # fmt: skip
    result = _update(
        {
            "rows": [{key: row[key] for key in keep if key in row} for row in rows],
            "truncated_text_share": report["text_stats"]["truncated_share"],
            "text_stats": report["text_stats"],
            "downstream": report["downstream"],
            "run": str(args.run_dir),
            "marc_config": json.loads((Path(args.run_dir) / "config.json").read_text()),
            # The rows' own seconds (every tier, seed and row trained): a re-run
            # that resumes from the progress file reports the whole table's cost.
            "table_wall_s": sum(row["seconds"] for row in rows),
            "table_elapsed_s": table_wall_s,
            "table_command": " ".join(sys.argv),
            "note": args.note,
        }
    )
    markdown = downstream_markdown(rows)
    print(markdown)
    plot_paired_deltas(rows, RESULTS_DIR / "downstream-v2-ml-1m-half.png")
    update_results_section(
        "downstream-v2",
        f"""## Downstream evaluation v2 (ml-1m-half, all-MiniLM-L6-v2)

{markdown}

![paired deltas](results/downstream-v2-ml-1m-half.png)

Ranker: DCNv2; every row trained on {downstream.train_samples or "all"} training samples per seed,
learning rate {downstream.learning_rate} and batch {downstream.batch_size} (chosen on validation
users for DCNv2 alone over learning rates {result["learning_rate_grid"]} x batch sizes
{result["batch_size_grid"]}), up to {downstream.max_epochs} epochs, patience {downstream.patience};
cross layers of rank {downstream.cross_projection_dim or "full"} (chosen on validation users, see
`cross_rank_grid`).
Ranker speed, one epoch: {result["ranker_rows_per_s_before"]:.0f} rows/s before v2,
{result["ranker_rows_per_s_after"]:.0f} after (full tier, same features;
{result["ranker_speedup"]:.1f}x). User texts truncated by the tokenizer:
{100 * result["truncated_text_share"]:.1f}%. Table wall time {result["table_wall_s"] / 60:.0f} min.
Machine: {result["machine"]["cpu"]}, cpu_flags {result["machine"]["cpu_flags"]}.
Commands: `{result["ranker_throughput"]["command"]}`, `{result["grid"]["command"]}`,
`{result["table_command"]}`. {args.note}
""",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="what else ran during the measurement")
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("throughput")
    step.add_argument("--rows", type=int, default=100_000)
    step.add_argument("--repeats", type=int, default=2)
    step.add_argument("--batch-size", type=int, default=DownstreamConfig().batch_size)
    step = commands.add_parser("grid")
    step.add_argument("--tier", default="kar", choices=list(TIERS))
    step.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-3])
    step.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096])
    step = commands.add_parser("rank")
    step.add_argument("--ranks", nargs="+", default=["full", "64", "32"])
    step.add_argument("--tiers", nargs="+", default=list(TIERS), choices=list(TIERS))
    step.add_argument("--tolerance", type=float, default=0.001)
    step = commands.add_parser("table")
    step.add_argument("--run-dir", type=Path, required=True)
    step.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    config = RunConfig.from_file(args.config)
    {"throughput": throughput, "grid": grid, "rank": rank, "table": table}[args.command](
        args, config
    )


if __name__ == "__main__":
    main()
