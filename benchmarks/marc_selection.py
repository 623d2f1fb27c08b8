"""MARC's settings chosen by what its vectors are for: the downstream ranker's validation AUC.

Issue "MARC-C must beat PCA", steps 2-5, on MARC's heads (compression and
matching networks) trained on the frozen backbone's vectors: the same frozen
MiniLM vectors (max_length 128) that the `frozen` and `pca-128` rows of the
downstream-v3 table use, so a cell answers "does a trained 128-d compression of
r beat PCA-128 of the same r?". LoRA is not trained here (24 minutes a run at
marc-scale on 2 cores would allow three cells in this session's budget).

  python benchmarks/marc_selection.py grid [--cells NAME ...]
      each cell: heads trained with its settings (lambda, HSIC scale, cross-fit
      folds, holdout, epochs, compression dropout), then per cell MARC's own
      validation AUC, HSIC's gradient share into the compression network,
      linear CKA(r, c) on validation users, the ridge user probe (R^2 training
      / validation users) and the downstream DCNv2's validation-user AUC on the
      kar tier (ranker seed 0, the generic v3 adaptor setting). Resumable.
  python benchmarks/marc_selection.py judge --seeds 0 1 2
      the plain cell with the best downstream validation AUC (SELECTION_RULE),
      the best cross-fitted cell, and each one's twin without HSIC, against dcnv2 and
      pca-128 at 3 ranker seeds on the kar tier, in one run; paired deltas
      against dcnv2 and against pca-128. Test users are
      read only here, for the chosen cells.
  python benchmarks/marc_selection.py heads-seeds --seeds 0 1 2
      the best cross-fitted cell and its no-HSIC twin again, heads trained at
      seed i for ranker seed i (the judge's spread covers ranker seeds only),
      with frozen, pca-128 and dcnv2; paired deltas against each.
  python benchmarks/marc_selection.py --note "..." report
      the RESULTS section again from the JSON, with a reading appended.

Results: results/marc-diagnosis.json, RESULTS.md section "marc-diagnosis" and
results/marc-diagnosis.png (downstream validation AUC against HSIC's gradient
share and against MARC's own validation AUC).
"""

import argparse
import dataclasses
import fcntl
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from downstream_v3 import grid_cell
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import numpy as np

from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.experiments.downstream_rows import vector_provider
from marc_keras.experiments.marc_run import MARCRun, default_preset, downstream_inputs
from marc_keras.models.cross_fitted_heads import CrossFittedHeads
from marc_keras.models.marc import MARC
from marc_keras.probing.linear_cka import linear_cka
from marc_keras.probing.user_click_probe import UserClickProbe
from marc_keras.ranking.downstream_evaluator import BASELINE_ROW, DownstreamEvaluator
from marc_keras.utils.atomic_files import write_atomically

RESULT = "marc-diagnosis.json"
DIAGNOSIS_KEYS = (
    "setting",
    "own_validation_auc",
    "gradient_share_hsic",
    "cka_r_c_validation_users",
    "user_probe",
    "downstream_validation_auc",
)
TIER = "kar"
SELECTION_RULE = (
    "The grid cell with the highest downstream validation-user AUC (DCNv2, kar tier, ranker "
    "seed 0, all training rows, the generic v3 adaptor setting); MARC's own AUC is recorded "
    "but not read. Test users are read only by `judge`."
)


@dataclasses.dataclass(frozen=True)
class HeadSetting:
    """One grid cell's settings of the heads' training."""

    hsic_weight: float = 0.01
    hsic_scale: str = "normalised"
    folds: int = 1
    holdout: str = "all-folds"
    epochs: int = 6
    dropout: float = 0.0


# lambda spans the normalised form's gradient share of 0.1% .. 90% on the demo run
# (benchmarks/results/hsic-gradient-share.json); cross-fitting and its holdout, one
# epoch against early stopping, and compression dropout at the lambdas that matter.
CELLS = {
    "no-hsic": HeadSetting(hsic_weight=0.0),
    "lambda-0.01": HeadSetting(hsic_weight=0.01),
    "lambda-0.1": HeadSetting(hsic_weight=0.1),
    "lambda-1": HeadSetting(hsic_weight=1.0),
    "lambda-10": HeadSetting(hsic_weight=10.0),
    "lambda-100": HeadSetting(hsic_weight=100.0),
    "trace-lambda-0.01": HeadSetting(hsic_weight=0.01, hsic_scale="trace"),
    "no-hsic-cross-fit-3": HeadSetting(hsic_weight=0.0, folds=3),
    "lambda-1-cross-fit-3": HeadSetting(hsic_weight=1.0, folds=3),
    "lambda-10-cross-fit-3": HeadSetting(hsic_weight=10.0, folds=3),
    "lambda-1-one-epoch": HeadSetting(hsic_weight=1.0, epochs=1),
    "lambda-1-dropout-0.3": HeadSetting(hsic_weight=1.0, dropout=0.3),
}
PAIRS = {"train": 200_000, "validation": 2048}
BATCH_SIZE, LEARNING_RATE, WEIGHT_DECAY, SEED = 64, 1e-3, 0.01, 0


def _load():
    path = RESULTS_DIR / RESULT
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(values):
    # Grid processes on disjoint cells may run side by side: merge under a lock.
    RESULTS_DIR.mkdir(exist_ok=True)
    with open(RESULTS_DIR / f".{RESULT}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _merge(values)


def _merge(values):
    current = _load()
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key].update(value)
        else:
            current[key] = value
    current["machine"] = machine_facts()
    write_json(RESULT, current)
    return current


class Study:
    """The run's split, features, frozen vectors and pairs, built once."""

    def __init__(self, args):
        config = RunConfig.from_file(args.config or Path(args.run_dir) / "config.json")
        self.run = MARCRun.open(args.run_dir, config)
        self.inputs = downstream_inputs([self.run], DownstreamConfig(), log=print)
        split = self.inputs.split
        self.frozen = self.run.encode_vectors(split, include_trained=False)["frozen"]
        self.pairs = {name: split.sample(name, size, seed=SEED) for name, size in PAIRS.items()}
        self.training_users = split.users["train"]
        self.preset = config.model.preset or default_preset()
        self.evaluator = DownstreamEvaluator(
            self.inputs.features, DownstreamConfig(seeds=(0,), tiers=(TIER,)), log=print
        )

    def build_model(self, setting):
        def build():
            return MARC.from_preset(
                self.preset,
                lora_rank=0,
                compressed_dim=128,
                hsic_weight=setting.hsic_weight,
                hsic_scale=setting.hsic_scale,
                compression_dropout=setting.dropout,
            )

        return build

    def heads(self, setting, seed=SEED):
        """The setting's `CrossFitResult`, heads initialised and shuffled with `seed`."""
        return CrossFittedHeads(
            self.build_model(setting),
            folds=setting.folds,
            epochs=setting.epochs,
            batch_size=BATCH_SIZE,
            learning_rate=LEARNING_RATE,
            weight_decay=WEIGHT_DECAY,
            seed=seed,
            holdout=setting.holdout,
        ).fit_transform(
            *self.frozen, self.pairs["train"], self.pairs["validation"], self.training_users
        )

    def vectors_path(self, name, seed=SEED):
        suffix = "" if seed == SEED else f"-heads-seed-{seed}"
        return self.run.run_dir / "heads-vectors" / f"{name}{suffix}.npz"

    def save_vectors(self, name, result, seed=SEED):
        """A cell's vectors, so that `judge` reuses them instead of training again."""
        path = self.vectors_path(name, seed)
        path.parent.mkdir(exist_ok=True)
        arrays = {
            "user_ids": result.users[0],
            "users": result.users[1],
            "item_ids": result.items[0],
            "items": result.items[1],
        }
        write_atomically(path, lambda temporary: np.savez(temporary, **arrays))

    def cell_vectors(self, name, seed=SEED):
        """((user ids, users), (item ids, items)) of a grid cell's heads trained with
        `seed`, trained again if not saved."""
        path = self.vectors_path(name, seed)
        if not path.is_file():
            self.save_vectors(name, self.heads(CELLS[name], seed), seed)
        with np.load(path) as stored:
            return (stored["user_ids"], stored["users"]), (stored["item_ids"], stored["items"])

    def provider(self, vectors):
        return vector_provider(self.inputs.features, lambda seed: vectors)

    def diagnose(self, result):
        """Own AUC, HSIC's gradient share, CKA(r, c) on validation users and the user probe."""
        model = result.model
        validation = self.pairs["validation"].iloc[:256]
        vectors = CrossFittedHeads.pair_vectors(*self.frozen, validation)
        shares = model.gradient_shares(vectors, validation["label"].to_numpy("float32"))
        (user_ids, frozen_users), _ = self.frozen
        validation_users = np.isin(user_ids, self.inputs.split.users["validation"])
        features = self.inputs.features
        user_table = self.provider((result.users, result.items))(0)[0]
        return {
            "own_validation_auc": result.validation_auc[-1],
            "fold_validation_auc": result.validation_auc[:-1],
            "gradient_share_hsic": shares["gradient_share_hsic"]["compression"],
            "gradient_norms": {
                "objective": shares["objective_norm"]["compression"],
                "hsic": shares["hsic_norm"]["compression"],
            },
            "cka_r_c_validation_users": linear_cka(
                frozen_users[validation_users], result.users[1][validation_users]
            ),
            "user_probe": UserClickProbe().evaluate(user_table, features.inputs, features.labels),
        }


def grid(args):
    study = Study(args)
    cells = _load().get("cells", {})
    for name in args.cells or list(CELLS):
        if name in cells:
            continue
        setting = CELLS[name]
        began = time.perf_counter()
        result = study.heads(setting)
        heads_s = time.perf_counter() - began
        study.save_vectors(name, result)
        downstream = grid_cell(
            study.evaluator,
            TIER,
            study.provider((result.users, result.items))(0),
            study.evaluator.config.adaptor_setting(),
        )
        cells[name] = {
            "setting": dataclasses.asdict(setting),
            **study.diagnose(result),
            "downstream_validation_auc": downstream["validation_auc"],
            "downstream": downstream,
            "heads_s": heads_s,
            "threads": args.threads,
            "command": " ".join(sys.argv),
        }
        cell = cells[name]
        print(
            f"{name}: downstream validation AUC {downstream['validation_auc']:.4f}, own "
            f"{cell['own_validation_auc']:.4f}, HSIC share {cell['gradient_share_hsic']:.3f}, "
            f"CKA {cell['cka_r_c_validation_users']:.3f}, probe R^2 "
            f"{cell['user_probe']['r2_train']:.3f}/{cell['user_probe']['r2_validation']:.3f} "
            f"({heads_s:.0f}s + {downstream['seconds']:.0f}s)",
            flush=True,
        )
        _save({"cells": {name: cells[name]}})
    _save(
        {
            "what": (
                "MARC's heads trained on the frozen MiniLM vectors (max_length 128) of "
                f"{args.run_dir}: {PAIRS['train']} training pairs of training users, "
                f"{PAIRS['validation']} validation pairs for early stopping, batch {BATCH_SIZE}, "
                f"AdamW {LEARNING_RATE} (weight decay {WEIGHT_DECAY}), seed {SEED}; LoRA not "
                "trained. Downstream: DCNv2, kar tier, ranker seed 0, generic v3 adaptor."
            ),
            "selection_rule": SELECTION_RULE,
            "cell_settings": {name: dataclasses.asdict(cell) for name, cell in CELLS.items()},
        }
    )


def chosen(cells):
    """The selection rule's cell (plain heads, no cross-fitting) and the best cross-fitted one."""
    plain = {name: cell for name, cell in cells.items() if cell["setting"]["folds"] == 1}
    crossed = {name: cell for name, cell in cells.items() if cell["setting"]["folds"] > 1}

    def best(found):
        return max(found, key=lambda name: found[name]["downstream_validation_auc"])

    return best(plain), best(crossed)


def without_hsic(cells, name):
    """The grid cell that differs from `name` only by lambda = 0, or None if not in the grid."""
    wanted = {**cells[name]["setting"], "hsic_weight": 0.0}
    return next((other for other, cell in cells.items() if cell["setting"] == wanted), None)


def judge(args):
    cells = _load()["cells"]
    best_plain, best_crossed = chosen(cells)
    study = Study(args)
    features = study.inputs.features
    references = study.inputs.representations
    # frozen and the LoRA MARC-C are in the downstream-v3 table at the same seeds.
    rows = {BASELINE_ROW: None, "pca-128": references["pca-128"]}
    # The chosen plain heads, the best cross-fitted ones, and each one's twin without HSIC.
    chosen_cells = [best_plain, best_crossed]
    chosen_cells += [without_hsic(cells, name) for name in chosen_cells]
    judged = {f"heads-{name}": name for name in dict.fromkeys(chosen_cells) if name}
    for row, name in judged.items():
        rows[row] = study.provider(study.cell_vectors(name))
    downstream = DownstreamConfig(seeds=tuple(args.seeds), tiers=(TIER,))
    evaluator = DownstreamEvaluator(
        features,
        downstream,
        progress_path=Path(args.run_dir) / "marc-selection-progress.json",
        progress_fingerprint=study.inputs.sources + [json.dumps(sorted(judged))],
    )
    found = evaluator.evaluate(rows)
    _add_paired_deltas(found, "pca-128", "pca")
    for row in found:
        if row["name"] in judged:
            cell = cells[judged[row["name"]]]
            row.update({key: cell[key] for key in DIAGNOSIS_KEYS})
    result = _save(
        {
            "judge": {
                "rows": found,
                "chosen": {"plain": best_plain, "cross_fit": best_crossed},
                "seeds": list(args.seeds),
                "tier": TIER,
                "downstream": dataclasses.asdict(downstream),
                "command": " ".join(sys.argv),
                "threads": args.threads,
            },
            "cpu_flags": machine_facts()["cpu_flags"],
        }
    )
    _report(result, args.note)


def _add_paired_deltas(found, reference, label):
    """`paired_delta_vs_{label}_mean/_std`: each row's AUCs minus `reference`'s, per seed."""
    base = next(row for row in found if row["name"] == reference)
    for row in found:
        if row.get("aucs") and row["name"] != reference:
            deltas = np.array(row["aucs"]) - np.array(base["aucs"])
            row[f"paired_delta_vs_{label}_mean"] = float(deltas.mean())
            row[f"paired_delta_vs_{label}_std"] = (
                float(deltas.std(ddof=1)) if len(deltas) > 1 else None
            )


def heads_seeds(args):
    """The best cross-fitted cell and its no-HSIC twin with heads trained at seed i for
    ranker seed i, so the spread covers both trainings; with frozen, pca-128, dcnv2."""
    cells = _load()["cells"]
    _, best_crossed = chosen(cells)
    twin = without_hsic(cells, best_crossed)
    study = Study(args)
    references = study.inputs.representations
    rows = {
        BASELINE_ROW: None,
        "pca-128": references["pca-128"],
        "frozen": references["frozen"],
    }
    judged = {f"heads-{name}": name for name in (best_crossed, twin) if name}
    for row, name in judged.items():
        per_seed = {seed: study.cell_vectors(name, seed) for seed in args.seeds}
        rows[row] = vector_provider(study.inputs.features, per_seed.__getitem__)
    downstream = DownstreamConfig(seeds=tuple(args.seeds), tiers=(TIER,))
    evaluator = DownstreamEvaluator(
        study.inputs.features,
        downstream,
        progress_path=Path(args.run_dir) / "marc-selection-heads-seeds-progress.json",
        progress_fingerprint=study.inputs.sources + [json.dumps(sorted(judged))],
    )
    found = evaluator.evaluate(rows)
    _add_paired_deltas(found, "pca-128", "pca")
    if twin:
        _add_paired_deltas(found, f"heads-{twin}", "no_hsic")
    result = _save(
        {
            "judge_heads_seeds": {
                "rows": found,
                "cells": judged,
                "seeds": list(args.seeds),
                "tier": TIER,
                "command": " ".join(sys.argv),
                "threads": args.threads,
            },
            "cpu_flags": machine_facts()["cpu_flags"],
        }
    )
    _report(result, args.note)


def plot(cells, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    downstream = [cell["downstream_validation_auc"] for cell in cells.values()]
    for axis, key, label in (
        (axes[0], "gradient_share_hsic", "HSIC's share of the compression network's gradient"),
        (axes[1], "own_validation_auc", "MARC's own validation AUC (heads)"),
    ):
        values = [cell[key] for cell in cells.values()]
        axis.scatter(values, downstream)
        for name, x, y in zip(cells, values, downstream):
            axis.annotate(name, (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
        axis.set_xlabel(label)
        if key == "gradient_share_hsic":
            axis.set_xscale("symlog", linthresh=1e-3)
    axes[0].set_ylabel("downstream validation AUC (DCNv2, kar, seed 0)")
    figure.suptitle("MARC heads on frozen MiniLM vectors: what selects good vectors")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _judged_table(title, rows, versus):
    """Markdown lines: `title`, then each row's test AUC and paired deltas against
    dcnv2 and against each `versus` header's row (header -> key prefix)."""
    lines = [
        "",
        title,
        "",
        "| row | test AUC | vs dcnv2 | " + " | ".join(versus) + " |",
        "|---|---|---|" + "---|" * len(versus),
    ]
    for row in rows:
        if row["name"] == BASELINE_ROW:
            continue
        deltas = [
            f"{row[f'{key}_mean']:+.4f} +- {row[f'{key}_std']:.4f}" if f"{key}_mean" in row else "-"
            for key in ("paired_delta", *versus.values())
        ]
        lines.append(
            f"| {row['name']} | {row['auc_mean']:.4f} +- {row['auc_std']:.4f} | "
            + " | ".join(deltas)
            + " |"
        )
    return lines


def _report(result, note):
    cells = result["cells"]
    png = RESULTS_DIR / "marc-diagnosis.png"
    plot(cells, png)
    lines = [
        "| cell | lambda | scale | folds | own val AUC | HSIC share | CKA(r,c) | probe R^2 "
        "train / val | downstream val AUC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, cell in cells.items():
        setting = cell["setting"]
        lines.append(
            f"| {name} | {setting['hsic_weight']:g} | {setting['hsic_scale']} | "
            f"{setting['folds']}{' avg' if setting['holdout'] == 'fold-average' else ''} | "
            f"{cell['own_validation_auc']:.4f} | {cell['gradient_share_hsic']:.3f} | "
            f"{cell['cka_r_c_validation_users']:.3f} | {cell['user_probe']['r2_train']:.3f} / "
            f"{cell['user_probe']['r2_validation']:.3f} | {cell['downstream_validation_auc']:.4f} |"
        )
    judged = result["judge"]
    lines += _judged_table(
        f"Judged at ranker seeds {judged['seeds']} (kar tier): `{judged['command']}`",
        judged["rows"],
        {"vs pca-128": "paired_delta_vs_pca"},
    )
    heads_seeded = result.get("judge_heads_seeds")
    if heads_seeded:
        lines += _judged_table(
            f"Heads trained at seed i for ranker seed i, i in {heads_seeded['seeds']} (the "
            f"spread covers both trainings): `{heads_seeded['command']}`",
            heads_seeded["rows"],
            {"vs pca-128": "paired_delta_vs_pca", "vs its no-HSIC twin": "paired_delta_vs_no_hsic"},
        )
    body = "\n".join(lines)
    if note:
        body += "\n\n" + note
    update_results_section(
        "marc-diagnosis",
        f"{body}\n\nPlot: `results/{png.name}`. Machine: {result['machine']}.",
    )
    print(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        help="the run's settings (default: the run directory's own config.json, so later "
        "edits of configs/demo.toml do not change what is measured)",
    )
    parser.add_argument("--run-dir", default="runs/demo-v3")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="reading appended to the RESULTS section")
    commands = parser.add_subparsers(dest="command", required=True)
    grid_parser = commands.add_parser("grid")
    grid_parser.add_argument("--cells", nargs="*", choices=list(CELLS))
    judge_parser = commands.add_parser("judge")
    judge_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    seeds_parser = commands.add_parser("heads-seeds")
    seeds_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    commands.add_parser("report", help="rewrite the RESULTS section from the JSON (with --note)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    actions = {
        "grid": grid,
        "judge": judge,
        "heads-seeds": heads_seeds,
        "report": lambda args: _report(_load(), args.note),
    }
    actions[args.command](args)


if __name__ == "__main__":
    main()
