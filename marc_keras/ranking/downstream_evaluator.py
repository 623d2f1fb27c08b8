"""Downstream CTR evaluation of user/item vectors over seeds and ranker tiers (DESIGN.md Sec. 4)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from marc_keras.config import DownstreamConfig
from marc_keras.config.adaptor_setting import AdaptorSetting
from marc_keras.config.ranker_tier import resolve_tier
from marc_keras.ranking.ctr_metrics import auc, logloss, relative_improvement
from marc_keras.ranking.ranker_registry import constructor_arguments, ranker_class
from marc_keras.ranking.ranking_features import training_rows
from marc_keras.ranking.two_feature_logistic import TwoFeatureLogistic
from marc_keras.ranking.validation_auc import ValidationAUC
from marc_keras.utils.atomic_files import write_json
from marc_keras.utils.backend_guard import set_random_seed

if TYPE_CHECKING:
    from marc_keras.config.ranker_tier import RankerTier
    from marc_keras.ranking.field_ranker import FieldRanker
    from marc_keras.ranking.ranking_features import RankingFeatures

LOGISTIC_ROW = "lr-2"


def _sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, "float64")))


class DownstreamEvaluator:
    """Trains one CTR ranker per representation, tier and seed; reports test-user AUC and logloss.

    The ranker is `config.ranker` (DCNv2 by default), and its row without
    vectors is named after it. Model choice (early stopping, best epoch)
    uses validation users only; the test users are scored once with the
    chosen weights. Every row is paired with that row of the same tier and seed: same
    training rows, same data order, same initial weights of the shared
    layers. A subsample (`train_samples`) is drawn anew per seed.

    Args:
        features: a `RankingFeatures`.
        config: a `DownstreamConfig`.
        log: callable taking one progress line.
        progress_path: optional JSON file recording every finished
            (tier, representation, seed) result with the settings it was
            made with; an interrupted evaluation run again with the same
            settings skips what it had finished.
        progress_fingerprint: what else the results depend on (the vectors'
            source), stored with them; other sources start afresh.

    Example:
    >>> evaluator = DownstreamEvaluator(features, DownstreamConfig(seeds=(0, 1, 2)))
    >>> rows = evaluator.evaluate({"dcnv2": None, "marc-c": lambda seed: (user_table, item_table)})
    >>> print(downstream_markdown(rows))  # marc_keras.utils.markdown_tables
    """

    def __init__(
        self,
        features: RankingFeatures,
        config: DownstreamConfig | None = None,
        log: Callable[[str], object] = print,
        progress_path: str | os.PathLike | None = None,
        progress_fingerprint: str = "",
    ) -> None:
        self.features = features
        self.config = config or DownstreamConfig()
        self.log = log
        self.progress_path = Path(progress_path) if progress_path else None
        self.progress_fingerprint = str(progress_fingerprint)

    def train_rows(self, seed: int) -> np.ndarray:
        """Indices of the training samples a seed trains on (all, or a per-seed subsample)."""
        return training_rows(len(self.features.labels["train"]), self.config.train_samples, seed)

    def train_one(
        self,
        tier: str | RankerTier,
        seed: int,
        user_vectors: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
        verbose: int = 0,
        adaptor: AdaptorSetting | None = None,
    ) -> tuple[FieldRanker, float, float, int]:
        """Trains one ranker on a tier's features.

        Args:
            tier: a tier name ("kar", "full") or `RankerTier`.
            seed: seeds the weights, the data order and the subsample.
            user_vectors: optional table from `RankingFeatures.vector_table`.
            item_vectors: likewise for items.
            verbose: Keras verbosity.
            adaptor: the vector adaptors' `AdaptorSetting`, by default the
                config's generic one.

        Returns:
            `(ranker, test AUC, test logloss, epochs trained)`.
        """
        config = self.config
        tier = resolve_tier(tier) if isinstance(tier, str) else tier
        inputs = self.features.tier_inputs(tier)
        labels = self.features.labels
        set_random_seed(seed)
        ranker = ranker_class(config.ranker).from_features(
            self.features,
            tier,
            user_vectors,
            item_vectors,
            **constructor_arguments(config, adaptor or config.adaptor_setting()),
        )
        ranker.compile(
            optimizer=keras.optimizers.AdamW(
                config.learning_rate, weight_decay=config.weight_decay
            ),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        rows = self.train_rows(seed)
        history = ranker.fit(
            {name: array[rows] for name, array in inputs["train"].items()},
            labels["train"][rows, None],
            batch_size=config.batch_size,
            epochs=config.max_epochs,
            callbacks=[
                ValidationAUC(inputs["validation"], labels["validation"], 4 * config.batch_size),
                keras.callbacks.EarlyStopping(
                    monitor="val_auc",
                    mode="max",
                    patience=config.patience,
                    restore_best_weights=True,
                ),
            ],
            verbose=verbose,
        )
        logits = ranker.predict(inputs["test"], batch_size=4 * config.batch_size, verbose=0)[:, 0]
        test_auc = auc(labels["test"], logits)
        test_logloss = logloss(labels["test"], _sigmoid(logits))
        return ranker, test_auc, test_logloss, len(history.history["loss"])

    def logistic_reference(self, seed: int) -> tuple[float, float]:
        """The `lr-2` row's test (AUC, logloss) for a seed's training rows."""
        model = TwoFeatureLogistic(self.features).fit(self.train_rows(seed))
        logits = model.scores("test")
        labels = self.features.labels["test"]
        return auc(labels, logits), logloss(labels, _sigmoid(logits))

    def evaluate(
        self,
        representations: Mapping[str, Callable[[int], tuple] | None],
        tiers: Iterable[str] | None = None,
    ) -> list[dict]:
        """Evaluates each representation with every tier and seed.

        Args:
            representations: dict name -> `None` (no external vectors) or a
                callable `seed -> (user table, item table)` (either may be
                `None`), tables from `RankingFeatures.vector_table`. A callable
                lets each seed use vectors from its own upstream run. The
                name "lr-2" is the logistic reference (`TwoFeatureLogistic`)
                and takes `None`. Each row trains with its own
                `config.adaptor_setting(name)`.
            tiers: tier names, by default the config's `tiers`.

        Returns:
            A list of rows, tier-major: tier, name, adaptor_setting (the
            row's `AdaptorSetting` as a dict; `None` for rows without
            vectors), auc_mean, auc_std, logloss_mean, logloss_std, aucs,
            loglosses, epochs, seconds, seeds; with the ranker's row without
            vectors (named `config.ranker`), every row also gets baseline (that
            name), relaimpr, paired_deltas (AUC minus its, per seed), paired_delta_mean,
            paired_delta_std and lift (the paired delta's mean exceeds its
            std and zero).
        """
        tiers = list(tiers or self.config.tiers)
        finished = self._load_progress()
        # Seed-major: an evaluation stopped early has every row at its first seeds.
        for seed in self.config.seeds:
            for name, provider in representations.items():
                adaptor = self._row_adaptor(name, provider)
                pending = [
                    tier
                    for tier in tiers
                    if finished.get(f"{tier}/{name}/{seed}", {}).get("adaptor", "missing")
                    != adaptor
                ]
                if not pending:
                    continue
                started = time.perf_counter()
                tables = provider(seed) if provider is not None else (None, None)
                prepare_seconds = time.perf_counter() - started
                for tier in pending:
                    started = time.perf_counter()
                    if name == LOGISTIC_ROW:
                        test_auc, test_logloss = self.logistic_reference(seed)
                        epochs = 0
                    else:
                        _, test_auc, test_logloss, epochs = self.train_one(
                            tier, seed, *tables, adaptor=self.config.adaptor_setting(name)
                        )
                    finished[f"{tier}/{name}/{seed}"] = {
                        "adaptor": adaptor,
                        "auc": test_auc,
                        "logloss": test_logloss,
                        "epochs": epochs,
                        "seconds": prepare_seconds + time.perf_counter() - started,
                    }
                    self._save_progress(finished)
                    self.log(
                        f"{tier} {name} seed {seed}: test AUC {test_auc:.4f}, "
                        f"logloss {test_logloss:.4f}, {epochs} epochs"
                    )
        rows = []
        for tier in tiers:
            results = {
                name: [finished[f"{tier}/{name}/{seed}"] for seed in self.config.seeds]
                for name in representations
            }
            tier_rows = [
                {
                    "adaptor_setting": self._row_adaptor(name, representations[name]),
                    **self.summary_row(name, found, tier),
                }
                for name, found in results.items()
            ]
            base = results.get(self.config.ranker)
            if base is not None:
                for row in tier_rows:
                    row["baseline"] = self.config.ranker
                    self.add_paired_statistics(row, base)
            rows.extend(tier_rows)
        return rows

    def add_results(self, results: Mapping[str, dict]) -> None:
        """Records results trained elsewhere with these settings, so `evaluate` skips them.

        Args:
            results: "tier/row/seed" -> dict with auc, logloss, epochs,
                seconds and adaptor (the row's `AdaptorSetting` as a dict,
                `None` for rows without vectors), as `train_one` made them.
        """
        if self.progress_path is None:
            raise ValueError("add_results needs the evaluator's progress_path.")
        finished = self._load_progress()
        finished.update(results)
        self._save_progress(finished)

    def recorded_results(self) -> dict[str, dict]:
        """Results the progress file holds under these settings.

        Returns:
            "tier/row/seed" -> result dict, as `add_results` takes them; empty
            without a progress file or when it was made with other settings.
        """
        return self._load_progress()

    def _row_adaptor(self, name, provider):
        # A row without vectors has no adaptor for a setting to change.
        if provider is None:
            return None
        return dataclasses.asdict(self.config.adaptor_setting(name))

    def _settings(self):
        # Results are keyed by tier, row and seed and carry their adaptor
        # setting, so a run with other seeds, tiers or adaptor settings
        # reuses what still applies; every other setting changes them.
        settings = dataclasses.asdict(self.config)
        del settings["seeds"], settings["tiers"], settings["row_adaptors"]
        for name in list(settings):
            if name.startswith("adaptor_"):
                del settings[name]
        return {
            "config": json.loads(json.dumps(settings)),
            "fingerprint": self.progress_fingerprint,
        }

    def _load_progress(self):
        if self.progress_path is None or not self.progress_path.is_file():
            return {}
        saved = json.loads(self.progress_path.read_text())
        return saved["results"] if saved.get("settings") == self._settings() else {}

    def _save_progress(self, finished):
        if self.progress_path is None:
            return
        write_json(self.progress_path, {"settings": self._settings(), "results": finished})

    def summary_row(self, name: str, results: Sequence[dict], tier: str | None = None) -> dict:
        """One table row from per-seed results (dicts with auc, logloss, seconds, epochs)."""
        aucs = [result["auc"] for result in results]
        loglosses = [result["logloss"] for result in results]
        return {
            "tier": tier,
            "name": name,
            **mean_std("auc", aucs),
            **mean_std("logloss", loglosses),
            "aucs": aucs,
            "loglosses": loglosses,
            "epochs": [result.get("epochs") for result in results],
            "seconds": sum(result["seconds"] for result in results),
            "seeds": list(self.config.seeds),
        }

    @staticmethod
    def add_paired_statistics(row: dict, base_results: Sequence[dict]) -> None:
        """Adds RelaImpr and the paired AUC delta against the same seeds' vector-less results."""
        base_aucs = [result["auc"] for result in base_results]
        deltas = [value - base for value, base in zip(row["aucs"], base_aucs)]
        statistics_ = mean_std("paired_delta", deltas)
        row.update(
            relaimpr=relative_improvement(row["auc_mean"], statistics.fmean(base_aucs)),
            paired_deltas=deltas,
            **statistics_,
            lift=statistics_["paired_delta_mean"] > max(statistics_["paired_delta_std"], 0.0)
            and len(deltas) > 1,
        )


def adaptor_label(row: dict) -> str:
    """A table cell naming a row's adaptor setting ("-" for rows without vectors)."""
    setting = row.get("adaptor_setting")
    return AdaptorSetting(**setting).label() if setting else "-"


def mean_std(prefix, values):
    """`{prefix}_mean` and `{prefix}_std` (sample std; 0 for one value)."""
    return {
        f"{prefix}_mean": statistics.fmean(values),
        f"{prefix}_std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }
