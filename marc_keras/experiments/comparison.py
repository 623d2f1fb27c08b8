"""Trains and evaluates compression methods side by side: `marc-keras compare`
(DESIGN.md Sec. 5)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from marc_keras.baselines.autoencoder_projection import AutoencoderProjection
from marc_keras.baselines.method_registry import resolve_methods
from marc_keras.baselines.pca_projection import PCAProjection
from marc_keras.baselines.vae_projection import VAEProjection
from marc_keras.experiments.downstream_rows import vector_provider
from marc_keras.experiments.marc_run import MARCRun, build_split
from marc_keras.probing.linear_cka import linear_cka
from marc_keras.ranking.ctr_metrics import relative_improvement
from marc_keras.ranking.downstream_evaluator import (
    LOGISTIC_ROW,
    DownstreamEvaluator,
    mean_std,
)
from marc_keras.ranking.ranking_features import RankingFeatures
from marc_keras.utils.atomic_files import write_atomically, write_json
from marc_keras.utils.markdown_tables import downstream_markdown

if TYPE_CHECKING:
    from marc_keras.config.run_config import RunConfig

REFERENCE_ROW = "marc-c"
# A trained method's vectors -> their name in the run's vector files.
VECTOR_NAMES = {"compressed": "marc-c", "original": "marc-o", "cross-fit": "marc-c-cross-fit"}


def _projection(method, components, seed):
    if method.projection == "pca":
        return PCAProjection(components)
    if method.projection == "ae":
        return AutoencoderProjection(components, seed=seed)
    return VAEProjection(components, seed=seed)


def _progress_fingerprint(config) -> str:
    """The settings a scored row depends on beyond those `DownstreamEvaluator`
    already keys its progress by (`[evaluate]`, less seeds, tiers and adaptor
    settings): a rerun with more seeds or another row adaptor keeps what applies."""
    settings = config.to_dict()
    del settings["evaluate"]
    return json.dumps(settings, sort_keys=True)


def beats_by_one_std(reference: dict, row: dict) -> bool:
    """Whether `reference`'s mean AUC exceeds `row`'s by more than the larger of their stds."""
    return reference["auc_mean"] - row["auc_mean"] > max(reference["auc_std"], row["auc_std"])


def _train(config, methods, output_dir, seeds, split, log, verbose):
    """Fits (or resumes) every trained method's run per seed and encodes its vectors.

    Returns:
        ({run name: [per-seed metrics.json dicts]}, {run name: {seed: vectors}}).
    """
    run_methods = {method.run_name: method for method in methods if method.kind == "trained"}
    # Only runs with a cross-fitted row pay for the K heads' training.
    cross_fitted = {method.run_name for method in methods if method.vectors == "cross-fit"}
    trained, fit_metrics = {name: {} for name in run_methods}, {}
    # Seed-major, so an interrupted comparison has every method at its first seeds.
    for seed in seeds:
        for method in run_methods.values():
            folds = config.training.cross_fit_folds if method.run_name in cross_fitted else None
            run_config = config.replace(
                model=dataclasses.replace(config.model, **method.model),
                training=dataclasses.replace(config.training, seed=seed, cross_fit_folds=folds),
            )
            run = MARCRun.open(output_dir / "runs" / method.run_name / f"seed{seed}", run_config)
            log(f"training {method.run_name} seed {seed}")
            metrics = run.fit(
                log=log, verbose=verbose, frozen_vector_cache=output_dir / "frozen-vector-cache"
            )
            fit_metrics.setdefault(method.run_name, []).append(metrics)
            trained[method.run_name][seed] = run.encode_vectors(
                split, include_frozen=False, verbose=verbose
            )
    return fit_metrics, trained


def _training_statistics(metrics: list[dict], method) -> dict:
    """A trained method's own click AUC on its test pairs, its training budget and
    HSIC's share of the gradient at the end of its LoRA training, over seeds."""
    own = mean_std("own_test_auc", [seed_metrics["test"]["auc"] for seed_metrics in metrics])
    statistics_of_runs = {
        "own_test_auc": own["own_test_auc_mean"],
        "own_test_auc_std": own["own_test_auc_std"],
        # Runs finished before train_pairs was recorded leave it out.
        "train_pairs": metrics[0].get("train_pairs"),
        "train_minutes": statistics.fmean(m["timings"]["fit_s"] for m in metrics) / 60,
    }
    # The cross-fitted heads are trained after the run; its share is not theirs.
    shares = [
        m["gradient_shares"]["gradient_share_hsic"] for m in metrics if "gradient_shares" in m
    ]
    if method.vectors != "cross-fit" and len(shares) == len(metrics):
        statistics_of_runs["gradient_share_hsic"] = {
            group: statistics.fmean(share[group] for share in shares) for group in shares[0]
        }
    return statistics_of_runs


def _cka_r_c(vectors_by_seed: dict, name: str, validation_users) -> dict:
    """Linear CKA between a run's backbone output r (MARC-O) and its compressed
    vectors `name` (MARC-C, or the cross-fitted heads'), on validation users, over seeds."""
    values = []
    for vectors in vectors_by_seed.values():
        (user_ids, original), _ = vectors["marc-o"]
        (compressed_ids, compressed), _ = vectors[name]
        rows = np.isin(user_ids, validation_users)
        if not np.array_equal(user_ids, compressed_ids):
            raise ValueError(f"'{name}' and 'marc-o' vectors list different users.")
        values.append(linear_cka(original[rows], compressed[rows]))
    found = mean_std("cka_r_c", values)
    return {"cka_r_c": found["cka_r_c_mean"], "cka_r_c_std": found["cka_r_c_std"]}


def add_paired_deltas_vs(rows: list[dict], reference: str) -> None:
    """Adds `paired_delta_vs_{reference}_mean/_std` to every row: its AUC minus the
    same tier's `reference` row's AUC, seed by seed."""
    by_tier = {row["tier"]: row for row in rows if row["name"] == reference}
    for row in rows:
        base = by_tier.get(row["tier"])
        if base is None:
            continue
        deltas = [value - base_value for value, base_value in zip(row["aucs"], base["aucs"])]
        row.update(mean_std(f"paired_delta_vs_{reference}", deltas))


def compare_methods(
    config: RunConfig,
    method_names: Iterable[str],
    output_dir: str | os.PathLike,
    log: Callable[[str], object] = print,
    verbose: int = 0,
    train_only: bool = False,
) -> dict:
    """Trains every method on the same labels and sample budget and scores it downstream.

    Trained methods are MARC runs with the method's `[model]` overrides
    (`marc_keras.baselines.method_registry`), one run per downstream seed (training
    seed = downstream seed), so the spread covers both trainings; methods with
    the same settings (marc-c and marc-o) share their runs. Training-free
    methods are fitted on the frozen backbone's vectors of training users and
    the item catalogue, with the downstream seed. Every run lives under
    `output_dir/runs/` and resumes like any `marc-keras fit` run. Runs with a
    head warm-up share the frozen backbone's vectors of their texts through
    `output_dir/frozen-vector-cache/`: each text is encoded once per comparison.

    Args:
        config: the base `RunConfig` (data, model, training budget,
            `[evaluate]` with the seeds).
        method_names: registered method names.
        output_dir: where runs, `compare.json` and `compare.md` go.
        log: callable taking one progress line.
        verbose: Keras verbosity of the trainings.
        train_only: train and encode the runs, then stop before the
            downstream scoring, so trainings can be spread over processes
            that share `output_dir/runs` (each method's runs are written by
            one process only); a later call without it scores them all.

    Returns:
        The report written to `compare.json`: a "dcnv2" row (the downstream
        model without text vectors), then one row per method, with AUC / logloss mean
        and std, RelaImpr against MARC-C, and whether MARC-C beats each row
        by more than one standard deviation (`None` with a single seed);
        every row of a tier with a "pca" row also has its seed-paired AUC delta
        against it (`paired_delta_vs_pca_mean/_std`), and trained methods
        their own click AUC on test pairs (`own_test_auc`, `own_test_auc_std`),
        `train_pairs`, mean `train_minutes` per seed, `cka_r_c` (+ `_std`:
        linear CKA of the run's MARC-O and compressed user vectors on validation
        users) and, except the cross-fitted row, `gradient_share_hsic` (group ->
        HSIC's share of the gradient on one validation batch after training,
        mean over seeds). Only runs with a `marc-c-cross-fit` row cross-fit
        their heads (`training.cross_fit_folds`).
        With `train_only`, only {"fit_seconds": ...} and nothing is written.
    """
    methods = resolve_methods(method_names)
    cross_fitted_rows = [method.name for method in methods if method.vectors == "cross-fit"]
    if cross_fitted_rows and not config.training.cross_fit_folds:
        raise ValueError(
            f"The rows {cross_fitted_rows} need training.cross_fit_folds (K >= 2) in the config "
            "or `--set training.cross_fit_folds=3`; or leave them out of --methods."
        )
    output_dir = Path(output_dir)
    seeds = list(config.evaluate.seeds)
    split, interactions = build_split(config, with_interactions=True)
    fit_metrics, trained = _train(config, methods, output_dir, seeds, split, log, verbose)
    fit_seconds = {
        name: [metrics["timings"]["fit_s"] for metrics in runs]
        for name, runs in fit_metrics.items()
    }
    if train_only:
        return {"fit_seconds": fit_seconds}
    features = RankingFeatures(split, interactions)
    started = time.perf_counter()
    frozen = MARCRun(output_dir / "frozen", config).encode_vectors(
        split, include_trained=False, verbose=verbose
    )
    (user_ids, frozen_users), (item_ids, frozen_items) = frozen["frozen"]
    log(f"frozen vectors ready in {time.perf_counter() - started:.0f}s")

    training_users = np.isin(user_ids, split.users["train"])
    fit_rows = np.concatenate([frozen_users[training_users], frozen_items])
    components = config.model.compressed_dim

    def vectors_of(method):
        """callable seed -> ((user ids, users), (item ids, items)) of a method."""
        if method.kind == "frozen":
            return lambda seed: frozen["frozen"]
        if method.kind == "training-free":

            def project(seed):
                projection = _projection(method, components, seed).fit(fit_rows)
                return (
                    (user_ids, projection.transform(frozen_users)),
                    (item_ids, projection.transform(frozen_items)),
                )

            return project
        name = VECTOR_NAMES[method.vectors]
        return lambda seed: trained[method.run_name][seed][name]

    evaluator = DownstreamEvaluator(
        features,
        config.evaluate,
        log=log,
        progress_path=output_dir / "compare-progress.json",
        progress_fingerprint=_progress_fingerprint(config),
    )
    rows = evaluator.evaluate(
        {
            config.evaluate.ranker: None,
            LOGISTIC_ROW: None,
            **{method.name: vector_provider(features, vectors_of(method)) for method in methods},
        }
    )
    references = {row["tier"]: row for row in rows if row["name"] == REFERENCE_ROW}
    for row in rows:
        reference = references.get(row["tier"])
        if reference is not None:
            row["relaimpr_vs_marc_c"] = relative_improvement(row["auc_mean"], reference["auc_mean"])
            # One seed has no spread to beat: the verdict is left open (None).
            judged = len(seeds) > 1 and row is not reference
            row["marc_c_beats_by_one_std"] = beats_by_one_std(reference, row) if judged else None
    add_paired_deltas_vs(rows, "pca")
    trained_methods = {method.name: method for method in methods if method.kind == "trained"}
    for row in rows:
        method = trained_methods.get(row["name"])
        if method is not None:
            row.update(_training_statistics(fit_metrics[method.run_name], method))
            compressed = "marc-c" if method.vectors == "original" else VECTOR_NAMES[method.vectors]
            row.update(_cka_r_c(trained[method.run_name], compressed, split.users["validation"]))
    report = {
        "dataset": str(config.data.data_dir or config.data.dataset),
        "backbone": config.model.preset or "all-MiniLM-L6-v2",
        "seeds": seeds,
        "methods": {method.name: method.description for method in methods},
        "fit_seconds": fit_seconds,
        "config": config.to_dict(),
        "rows": rows,
    }
    write_json(output_dir / "compare.json", report)
    markdown = to_markdown(rows)
    write_atomically(
        output_dir / "compare.md", lambda temporary: Path(temporary).write_text(markdown + "\n")
    )
    return report


def _relaimpr_vs_marc_c(row):
    return f"{100 * row['relaimpr_vs_marc_c']:+.2f}%" if "relaimpr_vs_marc_c" in row else "-"


def _marc_c_beats(row):
    return {True: "yes", False: "no"}.get(row.get("marc_c_beats_by_one_std"), "-")


def _paired_vs_pca(row):
    if "paired_delta_vs_pca_mean" not in row:
        return "-"
    return f"{row['paired_delta_vs_pca_mean']:+.4f} +- {row['paired_delta_vs_pca_std']:.4f}"


def _own_test_auc(row):
    if "own_test_auc" not in row:
        return "-"
    return f"{row['own_test_auc']:.4f} +- {row['own_test_auc_std']:.4f}"


def _training_budget(row):
    if "train_minutes" not in row:
        return "-"
    pairs = f"{row['train_pairs']:,}" if row.get("train_pairs") is not None else "?"
    return f"{pairs} / {row['train_minutes']:.1f}"


def _hsic_share(row):
    if "gradient_share_hsic" not in row:
        return "-"
    return " / ".join(f"{share:.3f}" for share in row["gradient_share_hsic"].values())


def _cka(row):
    return f"{row['cka_r_c']:.3f}" if "cka_r_c" in row else "-"


def to_markdown(rows: Iterable[dict]) -> str:
    """The comparison as a Markdown table: the downstream table, MARC-C's verdicts,
    the paired delta against PCA, and trained methods' own AUC, budget, HSIC's
    gradient share and CKA(r, c)."""
    return downstream_markdown(
        rows,
        extra_columns=(
            ("RelaImpr vs marc-c", _relaimpr_vs_marc_c),
            ("MARC-C better by > 1 std", _marc_c_beats),
            ("paired delta vs pca", _paired_vs_pca),
            ("own test AUC", _own_test_auc),
            ("train pairs / min", _training_budget),
            ("HSIC gradient share (compression / lora)", _hsic_share),
            ("CKA(r, c) validation users", _cka),
        ),
    )
