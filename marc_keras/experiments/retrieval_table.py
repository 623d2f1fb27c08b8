"""The retrieval table (MARC Sec. 4.2.2, Table 2): a two-tower retriever per vector row."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import keras
import numpy as np

from marc_keras.config.adaptor_setting import AdaptorSetting
from marc_keras.config.ranker_tier import TIERS
from marc_keras.data.kar_split import KARSplit
from marc_keras.data.retrieval_queries import RetrievalQueries
from marc_keras.experiments.downstream_rows import vector_table_sizes
from marc_keras.experiments.seed_summary import add_paired_deltas, summarise_seeds
from marc_keras.ranking.ranking_features import RankingFeatures
from marc_keras.ranking.retrieval_metrics import retrieval_metrics
from marc_keras.ranking.two_tower_retriever import TwoTowerRetriever
from marc_keras.utils.backend_guard import set_random_seed

BASELINE_ROW = "base"
POPULARITY_ROW = "popularity"
SPLITS = ("train", "validation", "test")
HEADLINE_METRICS = ("ndcg@20", "hr@20", "mrr")
# Users scored per step when ranking the catalogue.
QUERY_CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class RetrievalSettings:
    """How each two-tower retriever is trained and judged.

    Args:
        seeds: training seeds (one retriever per row and seed).
        max_epochs: epochs at most; the best validation epoch is kept.
        patience: epochs without a better validation `selection_metric`.
        batch_size: (query, positive) pairs per step, the in-batch negatives.
        learning_rate: Adam's learning rate.
        temperature: softmax temperature of the cosine logits.
        item_id_dropouts: shares of training items whose id embedding is
            replaced by the out-of-vocabulary one (`TwoTowerRetriever`); one
            retriever per share, and each row and seed keeps the one with
            the best validation `selection_metric` (a cold item has no id:
            without this, the towers never learn to do without one).
        cutoffs: the K of HR@K and NDCG@K.
        selection_metric: the validation metric that picks the epoch.
        adaptor: the vector adaptors' regularisation, one setting for every
            row (`DownstreamConfig`'s generic setting by default).
        popularity_row: add the `popularity` row after `base`: candidates
            ranked by their count in the training pairs, no model.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    max_epochs: int = 10
    patience: int = 2
    # Chosen on validation users (runs/demo-96, seed 0, item id dropout 0; mean
    # validation NDCG@20 of base and frozen): batch / learning rate 1024 / 1e-3
    # 0.2540, 1024 / 3e-3 0.2555, 2048 / 3e-3 0.2623, 4096 / 1e-3 0.2465,
    # 4096 / 3e-3 0.2644; 2048 is within 0.003 of the best at a fifth of its
    # time (the in-batch softmax costs B^2).
    batch_size: int = 2048
    learning_rate: float = 3e-3
    temperature: float = 0.05
    # Both 0 and 0.5 were tried per row and seed on validation users (second
    # session of 2026-12-06, runs/demo-96 and runs/demo-cold): 0.5 won 20 of
    # 21 warm and 19 of 21 cold choices, so it is fixed, at half the time.
    item_id_dropouts: tuple[float, ...] = (0.5,)
    cutoffs: tuple[int, ...] = (10, 20, 50)
    selection_metric: str = "ndcg@20"
    adaptor: AdaptorSetting = AdaptorSetting(input_dropout=0.5, weight_decay=1e-3)
    popularity_row: bool = True


@dataclasses.dataclass(frozen=True)
class _Queries:
    """One split's queries as index arrays."""

    queries: RetrievalQueries
    users: np.ndarray  # (U,) user indices
    histories: np.ndarray  # (U, H) item indices, 0 = padding
    candidates: np.ndarray  # (C,) item indices
    positives: np.ndarray  # (U, C) bool
    excluded: np.ndarray  # (U, C) bool: history items


def retrieval_table(
    split: KARSplit,
    features: RankingFeatures,
    rows: Mapping[str, Callable[[int], tuple[np.ndarray | None, np.ndarray | None]] | None],
    settings: RetrievalSettings = RetrievalSettings(),
    log: Callable[[str], object] = print,
) -> list[dict]:
    """Trains one two-tower retriever per row and seed and ranks the test users' catalogue.

    Args:
        split: the `KARSplit`. With cold items (`split.cold_items`), they
            leave the training pairs, lose their id embedding, and are the
            only candidates of validation and test users (each split its
            half); without, every query ranks the whole catalogue.
        features: `RankingFeatures` of the split (vocabularies, genre
            shares, centered vector tables).
        rows: row name -> callable seed -> (user table, item table) as
            `downstream_rows.vector_provider` gives, or `None` for the
            retriever without vectors; "base" should be one of them, the
            reference of the paired deltas.
        settings: a `RetrievalSettings`.
        log: callable taking one progress line.

    Returns:
        One dict per row: `name`, `split` ("warm" or "cold"), `{metric}_mean/_std`
        and `{metric}s` per seed for every HR@K, NDCG@K and MRR and for the
        validation score of the chosen epoch (`validation_ndcg@20`),
        the chosen `epochs` and `item_id_dropouts` per seed,
        `paired_delta_vs_base_{metric}_mean/_std` for NDCG@20, HR@20 and MRR,
        `queries` (test users judged) and `wall_s`; with
        `settings.popularity_row`, the `popularity` row follows `base`.
    """
    cold = split.cold_items
    item_set = "warm" if cold is None else "cold"
    history_length = max(1, max(len(items) for items, _ in split.text_halves.values()))
    prepared = {
        name: _prepare(
            RetrievalQueries.from_split(split, name, cold, "warm" if name == "train" else item_set),
            features,
            history_length,
        )
        for name in SPLITS
    }
    train = prepared["train"]
    rows_of_pairs, pair_items = train.queries.pairs()
    pair_inputs = {
        "user": train.users[rows_of_pairs],
        "history": train.histories[rows_of_pairs],
        "item": features.indices(pair_items, "item"),
    }
    shares = features.item_genre_shares(TIERS["full"])
    probability = np.bincount(pair_inputs["item"], minlength=len(shares)) / len(pair_items)
    log(
        f"retrieval ({item_set}): {len(pair_items)} training pairs of {len(train.users)} users; "
        f"{len(prepared['test'].users)} test queries over {len(prepared['test'].candidates)} "
        "candidates"
    )
    results = []
    for row, provider in rows.items():
        per_seed, epochs, dropouts, started = [], [], [], time.perf_counter()
        for seed in settings.seeds:
            tables = provider(seed) if provider is not None else (None, None)
            candidates = []
            for dropout in settings.item_id_dropouts:
                set_random_seed(seed)
                model = _build(features, shares, probability, tables, train, settings, dropout)
                candidates.append(
                    (*_train_one(model, pair_inputs, prepared, seed, settings), dropout)
                )
            metrics, epoch, validation, dropout = max(candidates, key=lambda found: found[2])
            per_seed.append({**metrics, f"validation_{settings.selection_metric}": validation})
            epochs.append(epoch)
            dropouts.append(dropout)
            log(
                f"retrieval {row} seed {seed}: test NDCG@20 {metrics['ndcg@20']:.4f}, "
                f"HR@20 {metrics['hr@20']:.4f}, MRR {metrics['mrr']:.4f} (epoch {epoch}, "
                f"item id dropout {dropout})"
            )
        result = {
            "name": row,
            "split": item_set,
            "epochs": epochs,
            "item_id_dropouts": dropouts,
            "queries": per_seed[0]["users"],
            "wall_s": time.perf_counter() - started,
        }
        metrics = [metric for metric in per_seed[0] if metric != "users"]
        results.append({**result, **summarise_seeds(per_seed, metrics)})
    if settings.popularity_row:
        results.insert(1, _popularity(probability, prepared, settings, item_set))
    add_paired_deltas(results, BASELINE_ROW, HEADLINE_METRICS)
    return results


def _prepare(queries: RetrievalQueries, features: RankingFeatures, history_length: int):
    histories = np.zeros((len(queries), history_length), "int32")
    for row, history in enumerate(queries.histories):
        indices = features.indices(np.asarray(history[-history_length:], dtype=object), "item")
        histories[row, : len(indices)] = indices
    candidates = features.indices(queries.candidate_ids, "item")
    column = {item: position for position, item in enumerate(queries.candidate_ids.tolist())}
    positives = np.zeros((len(queries), len(candidates)), bool)
    excluded = np.zeros_like(positives)
    for row, (history, found) in enumerate(zip(queries.histories, queries.positives)):
        positives[row, [column[item] for item in found]] = True
        excluded[row, [column[item] for item in history if item in column]] = True
    return _Queries(
        queries=queries,
        users=features.indices(queries.user_ids, "user"),
        histories=histories,
        candidates=candidates,
        positives=positives,
        excluded=excluded,
    )


def _popularity(probability, prepared, settings, item_set):
    """The reference any retriever must beat: candidates by their count in the training pairs.

    Cold items have no training pair: on the cold split every candidate ties
    and keeps its catalogue order, the score of an arbitrary order.
    """
    started = time.perf_counter()
    found = {}
    for name in ("validation", "test"):
        queries = prepared[name]
        scores = np.broadcast_to(probability[queries.candidates][None], queries.positives.shape)
        found[name] = retrieval_metrics(
            scores, queries.positives, queries.excluded, settings.cutoffs
        )
    metrics = {
        **found["test"],
        f"validation_{settings.selection_metric}": found["validation"][settings.selection_metric],
    }
    per_seed = [metrics] * len(settings.seeds)  # deterministic: the same for every seed
    return {
        "name": POPULARITY_ROW,
        "split": item_set,
        "epochs": [0] * len(settings.seeds),
        "item_id_dropouts": [None] * len(settings.seeds),
        "queries": metrics["users"],
        "wall_s": time.perf_counter() - started,
        **summarise_seeds(per_seed, [metric for metric in metrics if metric != "users"]),
    }


def _build(features, shares, probability, tables, train, settings, id_dropout):
    user_table, item_table = tables
    model = TwoTowerRetriever(
        num_items=len(shares),
        num_genres=shares.shape[1],
        history_length=train.histories.shape[1],
        temperature=settings.temperature,
        item_id_dropout=id_dropout,
        **vector_table_sizes(user_table, item_table),
        **{
            f"adaptor_{name}": value
            for name, value in dataclasses.asdict(settings.adaptor).items()
            if name != "user_dim"
        },
    )
    model.set_tables(
        shares,
        probability,
        user_table,
        item_table,
        cold_items=features.cold_items,
        training_users=np.unique(train.users),
    )
    return model


def _train_one(model, pair_inputs, prepared, seed, settings):
    """One retriever: early stopping on validation queries; test metrics of its best epoch."""
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate))
    best, best_epoch, best_weights, waited = -np.inf, 0, None, 0
    order = np.random.default_rng(seed)
    for epoch in range(1, settings.max_epochs + 1):
        rows = order.permutation(len(pair_inputs["item"]))
        # A last batch of a few pairs would be a softmax over a few items.
        rows = rows[: max(settings.batch_size, len(rows) - len(rows) % settings.batch_size)]
        model.fit(
            {key: value[rows] for key, value in pair_inputs.items()},
            batch_size=settings.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        score = _scores(model, prepared["validation"], settings)[settings.selection_metric]
        if score > best:
            best, best_epoch, best_weights, waited = score, epoch, model.get_weights(), 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
    model.set_weights(best_weights)
    return _scores(model, prepared["test"], settings), best_epoch, best


def _scores(model, queries: _Queries, settings: RetrievalSettings) -> dict:
    items = keras.ops.convert_to_numpy(model.encode_items(queries.candidates, training=False))
    scores = np.concatenate(
        [
            keras.ops.convert_to_numpy(
                model.encode_queries(
                    {
                        "user": queries.users[start : start + QUERY_CHUNK],
                        "history": queries.histories[start : start + QUERY_CHUNK],
                    },
                    training=False,
                )
            )
            @ items.T
            for start in range(0, len(queries.users), QUERY_CHUNK)
        ]
    )
    return retrieval_metrics(scores, queries.positives, queries.excluded, settings.cutoffs)
