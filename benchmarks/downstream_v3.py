"""Downstream evaluation v3 on ml-1m-half: each vector row with its own adaptor regularisation.

Two steps, each adding its figures to results/downstream-v3-ml-1m-half.json:

  python benchmarks/downstream_v3.py grid --run-dir runs/demo-v3
      every vector row x every adaptor setting of the grid, ranker seed 0, all
      training rows, the given tiers: validation-user AUC per cell (the
      test-user figures of each cell are kept for the table's seed 0 but never
      read by the choice). Resumable: finished cells are skipped.
  python benchmarks/downstream_v3.py table --run-dir runs/demo-v3 --seeds 0 1 2
      every v2 row at its chosen setting (CHOICE_RULE), paired deltas against
      DCNv2 alone, the RESULTS.md section "downstream-v3" and a plot of each
      row's paired delta in v2 against v3.
  python benchmarks/downstream_v3.py probe --run-dir runs/demo-v3
      a ridge probe from each row's user vectors to the user's mean click label:
      R^2 on training users against validation users (what carries to new users).

The vectors are the run's (`marc-keras fit --config configs/demo.toml
--run-dir runs/demo-v3` with the demo config as of commit 319b7bd, before the
demo warmed up its heads: the same MARC as the v2 table's run), encoded
once into the run directory; later steps read the run's own config.json.
"""

import argparse
import dataclasses
import fcntl
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import numpy as np

from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.config.adaptor_setting import AdaptorSetting
from marc_keras.config.ranker_tier import TIERS
from marc_keras.experiments.marc_run import MARCRun, downstream_inputs
from marc_keras.probing.user_click_probe import UserClickProbe
from marc_keras.ranking.adaptor_choice import TIE_TOLERANCE, choose_adaptor_settings
from marc_keras.ranking.ctr_metrics import auc
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator, adaptor_label
from marc_keras.utils.markdown_tables import downstream_markdown

RESULT = "downstream-v3-ml-1m-half.json"
V2_RESULT = "downstream-v2-ml-1m-half.json"
CHOICE_RULE = (
    "Per vector row, the adaptor setting with the highest validation-user AUC, averaged over "
    "the grid's tiers (ranker seed 0, all training rows, early stopping on the same "
    f"validation users); settings within {TIE_TOLERANCE} of that best count as tied and the "
    "weakest of them wins (fewest active regularisers, then no bottleneck, then the smallest "
    "weight decay, noise and dropout: AdaptorSetting.strength; "
    "marc_keras.ranking.adaptor_choice). Test users are never read. "
    "Rows without vectors (dcnv2, lr-2) keep the v2 settings."
)


def grid_settings(args):
    """The grid's `AdaptorSetting`s, the all-off (v2) one first."""
    cells = [
        AdaptorSetting(
            input_dropout=dropout, input_noise=noise, weight_decay=decay, user_dim=user_dim
        )
        for user_dim, decay, noise, dropout in itertools.product(
            args.user_dims, args.weight_decays, args.noises, args.dropouts
        )
    ]
    return sorted(cells, key=AdaptorSetting.strength)


def _load():
    path = RESULTS_DIR / RESULT
    return json.loads(path.read_text()) if path.is_file() else {}


def _update(values, cells=None, call=None, tier_rows=None):
    """Adds `values`, grid `cells`, a finished `call` and table rows to the JSON under a file lock.

    Several processes (grids on disjoint rows, tables on disjoint tiers, one
    thread each) may write at once; `tier_rows` replaces the rows of its tiers only.
    """
    RESULTS_DIR.mkdir(exist_ok=True)
    with open(RESULTS_DIR / f".{RESULT}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _load()
        current.update(values)
        if tier_rows is not None:
            tiers = {row["tier"] for row in tier_rows}
            kept = [row for row in current.get("rows", []) if row["tier"] not in tiers]
            current["rows"] = sorted(
                kept + tier_rows, key=lambda row: list(TIERS).index(row["tier"])
            )
            current["downstream"]["tiers"] = sorted({row["tier"] for row in current["rows"]})
        current.setdefault("grid_cells", {}).update(cells or {})
        if call is not None:
            current.setdefault("calls", []).append(call)
        current["machine"] = machine_facts()
        write_json(RESULT, current)
    return current


def _call_record(args, started_at):
    return {
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "started_at": started_at,
        "finished_at": time.time(),
        "note": args.note,
    }


def _inputs(args):
    config = RunConfig.from_file(args.config or args.run_dir / "config.json")
    run = MARCRun.open(args.run_dir, config)
    return run, downstream_inputs([run], DownstreamConfig(), log=print)


def _user_dim_label(user_dim):
    return "none" if user_dim is None else str(user_dim)


def grid(args):
    run, inputs = _inputs(args)
    features = inputs.features
    base = DownstreamConfig(seeds=(0,), tiers=tuple(args.tiers))
    evaluator = DownstreamEvaluator(features, base, log=print)
    vector_rows = [
        name
        for name, provider in inputs.representations.items()
        if provider is not None and (not args.rows or name in args.rows)
    ]
    settings = grid_settings(args)
    cells = _load().get("grid_cells", {})
    started_at = time.time()
    # Tier-major, so a grid stopped early has every row on the first tier.
    tables = {row: inputs.representations[row](0) for row in vector_rows}
    for tier in args.tiers:
        for row in vector_rows:
            for setting in settings:
                key = f"{tier}/{row}/{setting.label()}"
                if key in cells:
                    continue
                cells[key] = {
                    "row": row,
                    **grid_cell(evaluator, tier, tables[row], setting),
                    "threads": args.threads,
                }
                print(
                    f"{key}: validation AUC {cells[key]['validation_auc']:.4f}, "
                    f"{cells[key]['epochs']} epochs, {cells[key]['seconds']:.0f}s",
                    flush=True,
                )
                _update({}, cells={key: cells[key]})
    _update(
        {
            "grid": {
                "tiers": args.tiers,
                "input_dropout": args.dropouts,
                "input_noise": args.noises,
                "weight_decay": args.weight_decays,
                "user_dim": [_user_dim_label(user_dim) for user_dim in args.user_dims],
                "seed": 0,
                "downstream": dataclasses.asdict(base),
                "run": str(args.run_dir),
            },
        },
        call={"step": "grid", "rows": vector_rows, **_call_record(args, started_at)},
    )


def grid_cell(evaluator, tier, tables, setting):
    """One ranker at seed 0: its validation-user AUC (what choices read) and its test figures.

    The test figures are kept as seed 0 of a later table, if this cell is
    chosen; no choice reads them.
    """
    began = time.perf_counter()
    ranker, test_auc, test_logloss, epochs = evaluator.train_one(tier, 0, *tables, adaptor=setting)
    features = evaluator.features
    validation = features.tier_inputs(TIERS[tier])["validation"]
    scores = ranker.predict(validation, batch_size=4 * evaluator.config.batch_size, verbose=0)
    return {
        "tier": tier,
        "setting": dataclasses.asdict(setting),
        "validation_auc": auc(features.labels["validation"], scores[:, 0]),
        "epochs": epochs,
        "seconds": time.perf_counter() - began,
        "seed0_test": {"auc": test_auc, "logloss": test_logloss},
    }


def _elapsed(calls, step):
    """Wall time of a step's calls: first start to last finish (calls may run side by side).

    Table calls that trained nothing (a re-run that only re-reads its progress
    file to rebuild the report) are left out.
    """
    found = [call for call in calls if call["step"] == step and call.get("trained", 1)]
    return max(call["finished_at"] for call in found) - min(call["started_at"] for call in found)


def plot_v2_against_v3(rows, v2_rows, path):
    """Each row's paired delta vs DCNv2 alone in v2 and v3 (mean +- std), one panel per tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v2 = {(row["tier"], row["name"]): row for row in v2_rows}
    tiers = list(dict.fromkeys(row["tier"] for row in rows))
    figure, axes = plt.subplots(1, len(tiers), figsize=(7 * len(tiers), 4.5), squeeze=False)
    for axis, tier in zip(axes[0], tiers):
        shown = [row for row in rows if row["tier"] == tier and row["name"] != row.get("baseline")]
        positions = np.arange(len(shown))
        for offset, label, found in (
            (-0.2, "v2 (no regularisation)", [v2.get((tier, row["name"])) for row in shown]),
            (0.2, "v3 (row's chosen setting)", shown),
        ):
            axis.bar(
                positions + offset,
                [row["paired_delta_mean"] if row else np.nan for row in found],
                width=0.4,
                yerr=[row["paired_delta_std"] if row else 0.0 for row in found],
                capsize=3,
                label=label,
            )
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xticks(positions, [row["name"] for row in shown], rotation=45, ha="right")
        axis.set_title(f"{tier} tier: test AUC minus DCNv2 alone (same seed)")
        axis.set_ylabel("paired AUC delta")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def table(args):
    state = _load()
    cells = state["grid_cells"]
    choice_tiers = args.choice_tiers or sorted({cell["tier"] for cell in cells.values()})
    chosen = choose_adaptor_settings(cells.values(), choice_tiers)
    row_adaptors = {
        row: dataclasses.asdict(setting) for row, (setting, _) in sorted(chosen.items())
    }
    downstream = DownstreamConfig(
        seeds=tuple(args.seeds), tiers=tuple(args.tiers), row_adaptors=row_adaptors
    )
    started_at = time.time()
    run, inputs = _inputs(args)
    # One progress file per tier set: tables of different tiers may run side by side.
    progress = Path(args.run_dir) / f"evaluate-v3-progress-{'-'.join(args.tiers)}.json"
    trained = []

    def log(line):
        # One line per result trained in this call (results found in the progress file log none).
        trained.append(line)
        print(line, flush=True)

    evaluator = DownstreamEvaluator(
        inputs.features,
        downstream,
        log=log,
        progress_path=progress,
        progress_fingerprint=inputs.sources,
    )
    # The grid already trained every chosen cell at seed 0 with exactly the
    # table's settings (same seed, data order and initial weights): its test
    # figures are that seed's result.
    from_grid = {}
    if 0 in args.seeds:
        for row, (setting, _) in chosen.items():
            for tier in args.tiers:
                cell = cells.get(f"{tier}/{row}/{setting.label()}")
                if cell is not None:
                    from_grid[f"{tier}/{row}/0"] = {
                        "adaptor": dataclasses.asdict(setting),
                        "auc": cell["seed0_test"]["auc"],
                        "logloss": cell["seed0_test"]["logloss"],
                        "epochs": cell["epochs"],
                        "seconds": cell["seconds"],
                        "from_grid": True,
                    }
    evaluator.add_results(from_grid)
    new_rows = evaluator.evaluate(inputs.representations)
    for row in new_rows:
        if row["name"] in chosen:
            row["validation_grid"] = chosen[row["name"]][1]
    result = _update(
        {
            "choice_rule": CHOICE_RULE,
            "choice_tiers": choice_tiers,
            "row_adaptors": row_adaptors,
            "cpu_flags": machine_facts()["cpu_flags"],
            "downstream": dataclasses.asdict(downstream),
            "text_stats": inputs.split.text_stats,
            "run": str(args.run_dir),
            "marc_config": json.loads((Path(args.run_dir) / "config.json").read_text()),
        },
        call={
            "step": "table",
            "tiers": args.tiers,
            "trained": len(trained),
            **_call_record(args, started_at),
        },
        tier_rows=new_rows,
    )
    # Wall time of the grid plus the table (each from its first start to last
    # finish, as processes may run side by side); the chosen cells serve as seed 0.
    result = _update(
        {"table_wall_s": _elapsed(result["calls"], "grid") + _elapsed(result["calls"], "table")}
    )
    _report(result, args.note)


def probe(args):
    """The ridge probe of each row's user vectors: R^2 on training vs validation users."""
    _, inputs = _inputs(args)
    features = inputs.features
    found = {}
    for row, provider in inputs.representations.items():
        if provider is None:
            continue
        user_table = provider(0)[0]
        if user_table is None:
            continue
        found[row] = UserClickProbe().evaluate(user_table, features.inputs, features.labels)
        print(
            f"{row}: R^2 training users {found[row]['r2_train']:.3f}, "
            f"validation users {found[row]['r2_validation']:.3f} (alpha {found[row]['alpha']:g})"
        )
    _update(
        {
            "user_probe": {
                "what": (
                    "ridge from a user's vector (the ranker's centered table, seed 0) to the "
                    "user's mean click label on the ranker side; alpha by 5-fold CV on training "
                    "users; R^2 on training users (in sample) and validation users (held out)"
                ),
                "rows": found,
                "command": " ".join(sys.argv),
            }
        }
    )


def _report(result, note):
    rows = result["rows"]
    markdown = downstream_markdown(rows, [("adaptor (chosen)", adaptor_label)])
    print(markdown)
    v2_rows = json.loads((RESULTS_DIR / V2_RESULT).read_text())["rows"]
    plot_v2_against_v3(rows, v2_rows, RESULTS_DIR / "downstream-v3-ml-1m-half.png")
    downstream, grid = result["downstream"], result["grid"]
    commands = "\n".join(
        f"- `{call['command']}` ({call['threads']} thread(s), "
        f"{(call['finished_at'] - call['started_at']) / 60:.0f} min) {call['note']}"
        for call in result["calls"]
    )
    update_results_section(
        "downstream-v3",
        f"""## Downstream evaluation v3: adaptor regularisation chosen per row (ml-1m-half)

{markdown}

![paired deltas v2 vs v3](results/downstream-v3-ml-1m-half.png)

Ranker: DCNv2 with the v2 settings (learning rate {downstream["learning_rate"]}, batch
{downstream["batch_size"]}, up to {downstream["max_epochs"]} epochs, patience
{downstream["patience"]}, cross rank {downstream["cross_projection_dim"]}), all training rows,
seeds {downstream["seeds"]}. Grid (seed 0): input dropout {grid["input_dropout"]} x input
noise {grid["input_noise"]} x adaptor weight decay {grid["weight_decay"]} x user width
{grid["user_dim"]}, on tiers {result["choice_tiers"]}; every cell's validation AUC is in
`benchmarks/results/{RESULT}` (`grid_cells`, and `validation_grid` per row).
Choice rule: {result["choice_rule"]}
Wall time, grid and table: {result["table_wall_s"] / 60:.0f} min.
Machine: {result["machine"]["cpu"]}, cpu_flags {result["cpu_flags"]}.
Commands:
{commands}
{note}
""",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        help="the run's settings (default: the run directory's own config.json; "
        "configs/demo.toml to train a new run)",
    )
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo-v3"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="what else ran during the measurement")
    parser.add_argument("--tiers", nargs="+", default=["kar", "full"], choices=list(TIERS))
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("grid")
    step.add_argument("--rows", nargs="*", default=[], help="vector rows (default: all)")
    step.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.2, 0.5])
    step.add_argument("--noises", type=float, nargs="+", default=[0.0, 0.5])
    step.add_argument("--weight-decays", type=float, nargs="+", default=[0.0, 1e-3])
    step.add_argument(
        "--user-dims",
        type=lambda text: None if text == "none" else int(text),
        nargs="+",
        default=[None],
        help="user field widths; 'none' = the embedding width",
    )
    step = commands.add_parser("table")
    step.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    step.add_argument(
        "--choice-tiers",
        nargs="*",
        default=[],
        help="tiers whose grid cells choose each row's setting (default: every tier in the grid)",
    )
    commands.add_parser("probe")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    {"grid": grid, "table": table, "probe": probe}[args.command](args)


if __name__ == "__main__":
    main()
