"""Downstream ranking on vectors read from embedding stores (`marc-keras rank`)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from marc_keras.experiments.marc_run import build_split
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.ranking.ranking_features import SPLITS, RankingFeatures
from marc_keras.ranking.tfrs_ranker import TFRSRanker, check_store_coverage, read_store_vectors
from marc_keras.utils.atomic_files import write_json

if TYPE_CHECKING:
    from marc_keras.config import DownstreamConfig
    from marc_keras.experiments.marc_run import MARCRun

ENGINES = ("keras", "tfrs")
TOWERS = ("user", "item")


def _needed_ids(features, tower):
    """The ids of `tower` that occur in the samples of any split."""
    vocabulary = features.user_vocabulary if tower == "user" else features.item_vocabulary
    names = {index: identifier for identifier, index in vocabulary.items()}
    indices = np.unique(np.concatenate([features.inputs[split][tower] for split in SPLITS]))
    return [names[index] for index in indices.tolist() if index]


def _vector_table(features, tower, path, ids, vectors, log):
    """`features.vector_table` for a store; ids it lacks (a few at most) get the training mean."""
    missing = check_store_coverage(path, ids, _needed_ids(features, tower))
    if missing:
        log(f"{len(missing)} {tower}s have no vector in {path}; they get the training mean")
    return features.vector_table(ids, vectors, tower, allow_missing=True), len(missing)


def _check_widths(run, stores, paths, column):
    """Both stores must hold vectors of one width; "compressed" ones the run's compressed_dim."""
    widths = {tower: stores[tower][1].shape[1] for tower in TOWERS}
    expected = run.config.model.compressed_dim if column == "compressed" else None
    for tower in TOWERS:
        if expected is not None and widths[tower] != expected:
            raise ValueError(
                f"Embedding store '{paths[tower]}' holds {widths[tower]}-d '{column}' vectors, "
                f"but run '{run.run_dir}' makes {expected}-d ones (model.compressed_dim): it was "
                "encoded with another model's bundle. Encode both stores with this run's bundle, "
                "or give the run that made them as --run-dir."
            )
    if widths["user"] != widths["item"]:
        raise ValueError(
            f"Embedding store '{paths['item']}' holds {widths['item']}-d '{column}' vectors, but "
            f"the user store '{paths['user']}' holds {widths['user']}-d ones (expected the same "
            "width): encode both stores with the same bundle."
        )


def rank_with_stores(
    run: MARCRun,
    user_store: str | os.PathLike,
    item_store: str | os.PathLike,
    column: str = "compressed",
    engine: str = "keras",
    seeds: Iterable[int] | None = None,
    log: Callable[[str], object] = print,
    threads: int | None = None,
) -> dict:
    """Trains a downstream DCNv2 on vectors from two embedding stores and scores test users.

    The split and features are the run's, built exactly as `evaluate_runs`
    builds them, so the numbers compare with `evaluate.json`. The "keras"
    engine is `DownstreamEvaluator` (Keras 3 DCNv2); "tfrs" is `TFRSRanker`
    (the same DCNv2 built with TensorFlow Recommenders, in a child
    process). Both read every setting from the run's `[evaluate]` table:
    each tier of `evaluate.tiers`, the cross rank, experts and adaptor
    setting, the per-seed training subsample (`evaluate.train_samples`),
    learning rate, batch size, epoch limit and early stopping on validation
    users; and both get the same centered vector tables. A store may lack
    vectors for at most 1% of the users (items) in the samples; those get
    the training mean and are counted in the report.

    Args:
        run: a `MARCRun`; its `[data]` settings give the split and its
            `[evaluate]` settings (a `DownstreamConfig`) the training.
        user_store: embedding store of user vectors.
        item_store: embedding store of item vectors.
        column: the vector column of both stores, e.g. "compressed" or "original".
        engine: "keras" or "tfrs".
        seeds: ranker seeds, `None` for the run's `evaluate.seeds`.
        log: callable taking one progress line.
        threads: TensorFlow threads of the "tfrs" engine, `None` for its default.

    Returns:
        The report written atomically to `rank-{engine}.json` in the run
        directory: engine, column, stores, dataset, seeds, downstream
        settings, `missing` (ids per tower without a vector) and `rows`
        (one row per tier in the format of `DownstreamEvaluator.evaluate`;
        the "tfrs" engine adds per-tier and per-seed `runs` with validation
        AUC per epoch).

    Raises:
        ValueError: an unknown engine, or a store that does not fit the split
            or the run: "compressed" vectors must be `model.compressed_dim`
            wide, and user and item vectors equally wide (the message names
            the store, its width and the expected one).

    Example:
    >>> report = rank_with_stores(run, "users.parquet", "items.parquet", engine="tfrs")
    >>> print(downstream_markdown(report["rows"]))
    """
    _check_engine(engine)
    downstream = run.config.evaluate
    if seeds is not None:
        downstream = dataclasses.replace(downstream, seeds=tuple(int(seed) for seed in seeds))
    paths = {"user": str(user_store), "item": str(item_store)}
    # The stores are read first, so one that does not fit fails before the split is built.
    stores = {tower: read_store_vectors(paths[tower], column) for tower in TOWERS}
    _check_widths(run, stores, paths, column)
    started = time.perf_counter()
    split, interactions = build_split(run.config, with_interactions=True)
    features = RankingFeatures(split, interactions)
    log(f"features ready in {time.perf_counter() - started:.0f}s")
    tables, missing = {}, {}
    for tower in TOWERS:
        tables[tower], missing[tower] = _vector_table(
            features, tower, paths[tower], *stores[tower], log
        )
    report = {
        "engine": engine,
        "column": column,
        "user_store": paths["user"],
        "item_store": paths["item"],
        "dataset": str(run.config.data.data_dir or run.config.data.dataset),
        "seeds": list(downstream.seeds),
        "downstream": dataclasses.asdict(downstream),
        "missing": missing,
    }
    report.update(
        rank_tables(
            features, tables, downstream, engine, f"{engine}-{column}", log=log, threads=threads
        )
    )
    write_json(run.run_dir / f"rank-{engine}.json", report)
    return report


def _check_engine(engine):
    if engine not in ENGINES:
        raise ValueError(
            f"Unknown ranking engine '{engine}' (--engine); choose one of {', '.join(ENGINES)}."
        )


def rank_tables(
    features: RankingFeatures,
    tables: dict,
    config: DownstreamConfig,
    engine: str,
    name: str,
    log: Callable[[str], object] = print,
    threads: int | None = None,
) -> dict:
    """Trains one engine's DCNv2 per tier and seed on vector tables; the report's rows.

    Args:
        features: a `RankingFeatures`.
        tables: "user" and "item" -> table from `RankingFeatures.vector_table` (or `None`).
        config: the `DownstreamConfig` both engines read (tiers, seeds,
            subsample, training, cross rank, adaptor setting of row `name`).
        engine: "keras" (`DownstreamEvaluator`) or "tfrs" (`TFRSRanker`).
        name: the row's name, e.g. "tfrs-compressed".
        log: callable taking one progress line.
        threads: TensorFlow threads of the "tfrs" engine, `None` for its default.

    Returns:
        `rows`: one row per tier in the format of `DownstreamEvaluator.evaluate`
        (with `adaptor_setting`); the "tfrs" engine adds `runs` (per tier and
        seed: validation AUC per epoch, best epoch, ...).
    """
    _check_engine(engine)
    evaluator = DownstreamEvaluator(features, config, log=log)
    if engine == "keras":
        return {"rows": evaluator.evaluate({name: lambda seed: (tables["user"], tables["item"])})}
    ranker = TFRSRanker(config, threads, log=log)
    adaptor = config.adaptor_setting(name)
    rows, runs = [], []
    for tier in config.tiers:
        result = ranker.evaluate(
            features, tier, tables["user"], tables["item"], config.seeds, adaptor
        )
        results = [
            {
                "auc": seed_run["test_auc"],
                "logloss": seed_run["test_logloss"],
                "epochs": seed_run["epochs"],
                "seconds": result["seconds"] / len(result["runs"]),
            }
            for seed_run in result["runs"]
        ]
        rows.append(
            {
                "adaptor_setting": dataclasses.asdict(adaptor),
                **evaluator.summary_row(name, results, tier),
            }
        )
        runs.extend({"tier": tier, **seed_run} for seed_run in result["runs"])
    return {"rows": rows, "runs": runs}
