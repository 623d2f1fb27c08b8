"""MARC trained at scale on a 2-core CPU: a small grid on validation users, then one long run.

  grid   trains one short run per setting (--steps steps of the config's pair sample) from
         configs/marc-scale.toml
         and ranks them by MARC's own click AUC on validation users; test users
         are never looked at for the choice.
  final  trains configs/marc-scale.toml (with the chosen settings written into it
         by hand), or one run per --setting on top of it, and reports each run's
         own click AUC on test pairs, its validation AUC per epoch and the wall time.
  reference  the AUC of the item's training click rate on the same validation and
         test pairs (what popularity alone scores).

Every run is a `MARCRun` directory under --runs-dir: a killed run resumes from
its last step checkpoint when the command is repeated. Results accumulate in
benchmarks/results/marc-scale.json and its RESULTS.md section.

Usage:
  python benchmarks/marc_at_scale.py grid --steps 100 \
      --setting lr3e-4 training.learning_rate=3e-4 --setting lr1e-3 training.learning_rate=1e-3
  python benchmarks/marc_at_scale.py final
  python benchmarks/marc_at_scale.py final --setting cosine \
      training.learning_rate_schedule=\"cosine\" training.warmup_steps=50
  python benchmarks/marc_at_scale.py reference
"""

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun, build_split
from marc_keras.ranking.ctr_metrics import auc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

RESULT = "marc-scale.json"


def load_result():
    path = RESULTS_DIR / RESULT
    return json.loads(path.read_text()) if path.is_file() else {"grid": {}, "finals": {}}


def train(config, run_dir):
    started = time.perf_counter()
    run = MARCRun.open(run_dir, config)
    metrics = run.fit(verbose=2)
    history = pd.read_csv(Path(run_dir) / "history.csv")
    warmup = metrics.get("head_warmup")
    return {
        # The heads trained alone on frozen vectors, before any LoRA step (None: no warm-up).
        "head_warmup_validation_auc": warmup and warmup["validation_auc"],
        "head_warmup_minutes": warmup and (warmup["encode_s"] + warmup["fit_s"]) / 60,
        "validation_auc": metrics["validation"]["auc"],
        "test_auc": metrics["test"]["auc"],
        "epochs_trained": len(history),
        "validation_auc_per_epoch": [round(float(value), 4) for value in history["val_auc"]],
        "train_pairs": metrics["train_pairs"],
        "wall_minutes": (time.perf_counter() - started) / 60,
        "fit_minutes": metrics["timings"]["fit_s"] / 60,
        "resumed_from_step": metrics["resumed_from_step"],
        "run_dir": str(run_dir),
    }


def item_click_rate_auc(config):
    """AUC of the item's click rate over all training samples, on the run's own
    validation and test pairs: the bar a popularity score sets for MARC's head."""
    split = build_split(config)
    train = split.samples["train"]
    rate, prior = train.groupby("item_id")["label"].mean(), float(train["label"].mean())
    sizes = {
        "validation": config.training.validation_samples,
        "test": config.training.test_samples,
    }
    scores = {}
    for name, size in sizes.items():
        pairs = split.sample(name, size, seed=config.training.seed)
        score = pairs["item_id"].map(rate).fillna(prior).to_numpy("float64")
        scores[f"{name}_auc"] = auc(pairs["label"].to_numpy(), score)
    return scores


def _warmup(row):
    """Validation AUC and minutes of the head warm-up, '-' for runs without one."""
    if not row.get("head_warmup_validation_auc"):
        return "-"
    return f"{row['head_warmup_validation_auc']:.4f} ({row['head_warmup_minutes']:.1f} min)"


def report(result):
    grid = sorted(result["grid"].items(), key=lambda item: -item[1]["validation_auc"])
    lines = [
        "## MARC at scale: settings chosen on validation users, then one long run (issue 12)",
        "",
        "| grid setting | overrides | train pairs | fit min | validation AUC "
        "| after head warm-up alone |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | `{' '.join(row['overrides'])}` | {row['train_pairs']:,} | "
            f"{row['fit_minutes']:.1f} | {row['validation_auc']:.4f} | {_warmup(row)} |"
            for name, row in grid
        ),
    ]
    if result["finals"]:
        lines += [
            "",
            "Long runs (`final`), each trained within the 45-minute budget:",
            "",
            "| run | overrides | train pairs | wall min | fit min | validation AUC per epoch "
            "| after head warm-up alone | validation AUC | **test AUC** | also running |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {name} | `{' '.join(row['overrides']) or '-'}` | {row['train_pairs']:,} | "
                f"{row['wall_minutes']:.1f} | {row['fit_minutes']:.1f} | "
                f"{', '.join(f'{value:.3f}' for value in row['validation_auc_per_epoch'])} | "
                f"{_warmup(row)} | {row['validation_auc']:.4f} | **{row['test_auc']:.4f}** | "
                f"{row['note']} |"
                for name, row in result["finals"].items()
            ),
        ]
    reference = result.get("item_click_rate")
    if reference:
        lines += [
            "",
            "The item's training click rate alone, on the same pairs: validation "
            f"{reference['validation_auc']:.4f}, test {reference['test_auc']:.4f}.",
        ]
    facts = result["machine"]
    lines += [
        "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores, flags {facts['cpu_flags']}; "
        f"versions {facts['versions']}. Also running: {result.get('note') or 'nothing recorded'}. "
        f"Commands: {'; '.join(f'`{command}`' for command in result['commands'])}.",
    ]
    update_results_section("marc-scale", "\n".join(lines))
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["grid", "final", "reference"])
    parser.add_argument("--config", default="configs/marc-scale.toml")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/marc-scale"))
    parser.add_argument("--steps", type=int, default=100, help="training steps per grid run")
    parser.add_argument(
        "--setting",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a grid or final run: its name, then config overrides",
    )
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    args = parser.parse_args()
    command = "python benchmarks/marc_at_scale.py " + " ".join(sys.argv[1:])

    def record(section, name, row):
        # Read again just before writing: another stage may have run meanwhile.
        result = load_result()
        # Rows accumulate over sessions on different CPUs (AVX2 only, or
        # AVX-512/VNNI): each row keeps its own machine, the top level the latest.
        result["machine"] = machine_facts()
        result["note"] = args.note
        if command not in result.get("commands", []):
            result["commands"] = [*result.get("commands", []), command]
        if name is not None:
            result[section][name] = {**row, "machine": result["machine"]}
        else:
            result[section] = row
        write_json(RESULT, result)
        return result

    if args.stage == "grid":
        if not args.setting:
            parser.error("grid needs at least one --setting NAME KEY=VALUE ...")
        for name, *overrides in args.setting:
            overrides = [f"training.steps_per_epoch={args.steps}", "training.epochs=1", *overrides]
            config = RunConfig.from_file(args.config, overrides)
            row = train(config, args.runs_dir / "grid" / name)
            result = record("grid", name, {"overrides": overrides, **row})
            print(f"{name}: validation AUC {row['validation_auc']:.4f}", flush=True)
    elif args.stage == "final":
        for name, *overrides in args.setting or [["final"]]:
            config = RunConfig.from_file(args.config, overrides)
            row = train(config, args.runs_dir / name)
            row = {"config": args.config, "overrides": overrides, "note": args.note, **row}
            result = record("finals", name, row)
            print(f"{name}: test AUC {row['test_auc']:.4f}", flush=True)
    else:
        config = RunConfig.from_file(args.config)
        result = record("item_click_rate", None, item_click_rate_auc(config))
    report(result)


if __name__ == "__main__":
    main()
