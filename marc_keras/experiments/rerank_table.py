"""The re-ranking table (MARC Sec. 4.2.2, Table 3): PRM per vector row, KAR's protocol."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Mapping

import keras
import numpy as np
import torch

from marc_keras.data.kar_split import KARSplit
from marc_keras.data.rerank_lists import RerankLists
from marc_keras.experiments.downstream_rows import vector_table_sizes
from marc_keras.experiments.seed_summary import add_paired_deltas, summarise_seeds
from marc_keras.ranking.list_metrics import list_metrics
from marc_keras.ranking.prm_reranker import PRMReranker
from marc_keras.config.ranker_tier import TIERS
from marc_keras.ranking.ranking_features import RankingFeatures
from marc_keras.utils.backend_guard import set_random_seed

BASELINE_ROW = "prm"
# The metrics paired against PRM alone and kept per fold.
PAIRED_METRICS = ("map@5", "ndcg@5")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class RerankSettings:
    """How each PRM is trained and judged.

    Args:
        seeds: training seeds (one PRM per row and seed).
        list_seed: seed of the lists' padding and shuffles (KAR fixes one).
        max_epochs: epochs at most; the best validation epoch is kept.
        patience: epochs without a better validation `selection_metric`.
        batch_size: lists per step. 512 with learning rate 2e-3 was chosen
            on validation lists over KAR's 256 with 1e-3: validation MAP@5
            -0.0004 +- 0.0007 (paired over PRM alone, frozen and MARC-C, two
            seeds), 17% less time; 1,024 lost 0.004-0.006
            (`benchmarks/rerank_settings.py`, RESULTS.md "rerank-settings-ml-1m-half").
        learning_rate: Adam's learning rate.
        dropout: PRM's dropout.
        cutoffs: the k of MAP@k and NDCG@k.
        selection_metric: the validation metric that picks the epoch.
        cold_item_id_dropout: PRM's `item_id_dropout` on the cold split
            (0 on KAR's lists, as KAR's PRM). Fixed, not chosen per row as
            the retrieval table does: a choice would double a table that
            already takes most of the 30 minutes a task may take.
        cold_item_folds: on the cold split, 1 judges validation users on the
            validation half of the cold items and test users on the test
            half (ColdRec); 2 adds the swap (`ColdItems.swapped`), each fold
            choosing its own epoch on its own validation lists, and pools
            the test lists of both, so every cold item is a test item once.
            The training lists (warm items only) are the same for both
            folds, so each PRM is trained once. Two folds because one half
            is ~360 items and ~1,200 test lists on ml-1m-half: PRM alone
            scored 0.411 MAP@5 on validation and 0.446 on test lists, a gap
            as large as the effects the table is for.
        processes: PRMs trained at once, each in its own process with
            `torch.get_num_threads() // processes` threads (at least one);
            1 trains them one after another in this process. Two one-thread
            processes train 1.14x (384-d vectors) to 1.46x (no vectors) as
            many steps per second as one two-thread process on 2 cores
            (`benchmarks/prm_threads.py`, RESULTS.md "prm-threads"): PRM's
            steps are small, and the per-op work that one thread does alone
            is a large share of them. Results do not depend on it beyond
            float rounding with a different thread count.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    list_seed: int = 12345
    max_epochs: int = 10
    patience: int = 2
    batch_size: int = 512
    learning_rate: float = 2e-3
    dropout: float = 0.0
    cutoffs: tuple[int, ...] = (1, 3, 5, 7)
    selection_metric: str = "map@5"
    cold_item_id_dropout: float = 0.5
    cold_item_folds: int = 2
    processes: int = 2

    def __post_init__(self):
        if self.cold_item_folds not in (1, 2):
            raise ValueError(
                f"RerankSettings.cold_item_folds must be 1 (ColdRec's one split) or 2 (also "
                f"the halves swapped); got {self.cold_item_folds!r}."
            )
        if (
            isinstance(self.processes, bool)
            or not isinstance(self.processes, int)
            or (self.processes < 1)
        ):
            raise ValueError(
                f"RerankSettings.processes must be a whole number >= 1 (1 = train in this "
                f"process); got {self.processes!r}."
            )


def rerank_table(
    split: KARSplit,
    features: RankingFeatures,
    rows: Mapping[str, Callable[[int], tuple[np.ndarray | None, np.ndarray | None]] | None],
    settings: RerankSettings = RerankSettings(),
    log: Callable[[str], object] = print,
) -> list[dict]:
    """Trains one PRM per row and seed on KAR's lists and scores the test lists.

    Args:
        split: the `KARSplit`. With cold items (`split.cold_items`), training
            lists leave them out (rated and padding items), they share one
            out-of-vocabulary id, and validation and test lists hold only
            their split's half of them; without, KAR's lists.
        features: `RankingFeatures` of the split (vocabularies, genre shares,
            centered vector tables).
        rows: row name -> callable seed -> (user table, item table) as
            `downstream_rows.vector_provider` gives, or `None` for PRM
            without vectors; "prm" should be one of them, the reference of
            the paired deltas.
        settings: a `RerankSettings`.
        log: callable taking one progress line.

    Returns:
        One dict per row: `name`, `split` ("warm" or "cold"), `{metric}_mean/_std`
        and `{metric}s` per seed for every MAP@k / NDCG@k (on the cold split
        with two folds, over both folds' test lists), `paired_delta_vs_prm_{metric}_mean/_std`
        for MAP@5 and NDCG@5, per seed and fold the chosen `epochs`, the
        validation `selection_metric` of each chosen epoch
        (`validation_map@5s`) and the fold's own test `fold_map@5s` and
        `fold_ndcg@5s`, and `wall_s` (the seconds its PRMs trained, summed:
        with several processes, more than the row's share of the table's time).
    """
    folds = _folds(split.cold_items, settings.cold_item_folds)
    train = _lists(split, "train", folds[0], settings.list_seed)
    judged = [
        {name: _lists(split, name, fold, settings.list_seed) for name in SPLITS[1:]}
        for fold in folds
    ]
    train_inputs = _inputs(features, train)
    judged_inputs = [{name: _inputs(features, lists[name]) for name in lists} for lists in judged]
    shares = features.item_genre_shares(TIERS["full"])
    judged_pairs = list(zip(judged_inputs, judged))
    shared = ((train_inputs, train), judged_pairs, shares, features.cold_items, settings)
    tasks = [(row, seed) for row in rows for seed in settings.seeds]
    trained = {}
    for (row, seed), (fold_results, seconds) in _train_all(tasks, rows, shared, settings):
        metrics = list_metrics(
            np.concatenate([lists["test"].labels for lists in judged]),
            np.concatenate([fold["test_scores"] for fold in fold_results]),
            settings.cutoffs,
        )
        trained[row, seed] = (metrics, fold_results, seconds)
        log(
            f"rerank {row} seed {seed}: test MAP@5 {metrics['map@5']:.4f}, "
            f"NDCG@5 {metrics['ndcg@5']:.4f} "
            f"(epochs {[fold['epoch'] for fold in fold_results]}, {seconds:.0f} s)"
        )
    results = []
    for row in rows:
        per_seed = [trained[row, seed] for seed in settings.seeds]
        result = {
            "name": row,
            "split": "warm" if split.cold_items is None else "cold",
            "epochs": [[fold["epoch"] for fold in folds] for _, folds, _ in per_seed],
            f"validation_{settings.selection_metric}s": [
                [fold["validation"] for fold in folds] for _, folds, _ in per_seed
            ],
            **{
                f"fold_{metric}s": [
                    [fold["test"][metric] for fold in folds] for _, folds, _ in per_seed
                ]
                for metric in PAIRED_METRICS
            },
            "wall_s": sum(seconds for _, _, seconds in per_seed),
        }
        metrics = [metrics for metrics, _, _ in per_seed]
        ranked = [metric for metric in metrics[0] if metric.startswith(("map@", "ndcg@"))]
        results.append({**result, **summarise_seeds(metrics, ranked)})
    add_paired_deltas(results, BASELINE_ROW, PAIRED_METRICS)
    return results


def _train_all(tasks, rows, shared, settings):
    """Yields ((row, seed), (`_train_one`'s folds, seconds)) as each PRM finishes.

    With `settings.processes` > 1 the PRMs train in a pool of spawned
    processes that receive the data shared by every PRM once, at start-up.
    """
    processes = min(settings.processes, len(tasks))

    def tables(row, seed):
        provider = rows[row]
        return provider(seed) if provider is not None else (None, None)

    if processes == 1:
        for row, seed in tasks:
            yield (row, seed), _timed_train(tables(row, seed), seed, *shared)
        return
    threads = max(1, torch.get_num_threads() // processes)
    with concurrent.futures.ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(threads, shared),
    ) as pool:
        pending = {
            pool.submit(_train_in_worker, tables(row, seed), seed): (row, seed)
            for row, seed in tasks
        }
        for future in concurrent.futures.as_completed(pending):
            yield pending[future], future.result()


# What every PRM of a table shares, set once per worker process.
_WORKER_SHARED = None


def _start_worker(threads, shared):
    global _WORKER_SHARED
    torch.set_num_threads(threads)
    _WORKER_SHARED = shared


def _train_in_worker(tables, seed):
    return _timed_train(tables, seed, *_WORKER_SHARED)


def _timed_train(tables, seed, train, judged, shares, cold_items, settings):
    """`_train_one` and its seconds."""
    started = time.perf_counter()
    folds = _train_one(train, judged, shares, tables, cold_items, seed, settings)
    return folds, time.perf_counter() - started


def _folds(cold, count):
    """The cold-item assignments to judge on: `[None]` without cold items."""
    if cold is None:
        return [None]
    return [cold, cold.swapped()][:count]


def _inputs(features, lists):
    """PRM's inputs of `lists`: user and item indices."""
    return {
        "user": features.indices(lists.user_ids, "user"),
        "items": features.indices(lists.item_ids, "item"),
    }


def _lists(split, name, cold, seed):
    """KAR's lists of split `name`; with cold items, of the warm or that split's cold items."""
    if cold is None:
        return RerankLists.from_split(split, name, seed=seed)
    if name == "train":
        items = cold.warm(sorted(split.item_texts, key=str))
    else:
        items = sorted(cold.of(name), key=str)
    return RerankLists.from_split(split, name, seed=seed, catalogue=items, rated_items=items)


def _train_one(train, judged, shares, tables, cold_items, seed, settings):
    """One PRM, trained once; per fold, its best validation epoch's test scores.

    Args:
        train: (inputs, lists) of the training lists.
        judged: per fold, ({split: inputs}, {split: lists}) of the
            validation and test lists.

    Returns:
        Per fold, a dict: `epoch`, `validation` (its selection metric),
        `test` (metrics) and `test_scores` ((L, n) scores) of the epoch
        with the fold's best validation metric. Training stops when no
        fold has improved for `settings.patience` epochs.
    """
    (train_inputs, train_lists), (user_table, item_table) = train, tables
    set_random_seed(seed)
    model = PRMReranker(
        num_items=len(shares),
        num_genres=shares.shape[1],
        list_length=train_lists.item_ids.shape[1],
        dropout=settings.dropout,
        item_id_dropout=0.0 if cold_items is None else settings.cold_item_id_dropout,
        **vector_table_sizes(user_table, item_table),
    )
    model.set_tables(shares, user_table, item_table, cold_items=cold_items)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate), loss="binary_crossentropy"
    )
    best = [{"validation": -np.inf, "epoch": 0, "weights": None} for _ in judged]
    waited = 0
    order = np.random.default_rng(seed)
    for epoch in range(1, settings.max_epochs + 1):
        rows = order.permutation(len(train_lists))
        model.fit(
            {key: value[rows] for key, value in train_inputs.items()},
            train_lists.labels[rows],
            batch_size=settings.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        improved = False
        for fold, (inputs, lists) in zip(best, judged):
            score = _scores(model, inputs["validation"], lists["validation"], settings)[0][
                settings.selection_metric
            ]
            if score > fold["validation"]:
                fold.update(validation=score, epoch=epoch, weights=model.get_weights())
                improved = True
        waited = 0 if improved else waited + 1
        if waited >= settings.patience:
            break
    for fold, (inputs, lists) in zip(best, judged):
        model.set_weights(fold.pop("weights"))
        fold["test"], fold["test_scores"] = _scores(model, inputs["test"], lists["test"], settings)
    return best


def _scores(model, inputs, lists, settings: RerankSettings) -> tuple[dict, np.ndarray]:
    """(metrics, (L, n) scores) of `model` on `lists`."""
    predicted = np.asarray(model.predict(inputs, batch_size=4096, verbose=0))
    return list_metrics(lists.labels, predicted, settings.cutoffs), predicted
