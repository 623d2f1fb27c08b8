"""Downstream CTR evaluation of user/item vectors over several seeds (DESIGN.md Sec. 4)."""

import dataclasses
import json
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from marc_keras.config import DownstreamConfig
from marc_keras.ranking.ctr_metrics import auc, logloss, relative_improvement
from marc_keras.ranking.dcn_v2_ranker import DCNv2Ranker
from marc_keras.utils.atomic_files import write_json
from marc_keras.utils.backend_guard import set_random_seed

BASELINE_ROW = "dcnv2"


class DownstreamEvaluator:
    """Trains one DCNv2 per representation and seed; reports test-user AUC and logloss.

    Model choice (early stopping, best epoch) uses validation users only; the
    test users are scored once with the chosen weights.

    Args:
        features: a `RankingFeatures`.
        config: a `DownstreamConfig`.
        log: callable taking one progress line.
        progress_path: optional JSON file recording every finished
            (representation, seed) result with the settings it was made
            with; an interrupted evaluation run again with the same settings
            skips what it had finished.
        progress_fingerprint: what else the results depend on (the vectors'
            source), stored with them; other sources start afresh.

    Example:
    >>> evaluator = DownstreamEvaluator(features, DownstreamConfig(seeds=(0, 1, 2)))
    >>> rows = evaluator.evaluate({"dcnv2": None, "marc-c": lambda seed: (user_table, item_table)})
    >>> print(downstream_markdown(rows))  # marc_keras.utils.markdown_tables
    """

    def __init__(
        self, features, config=None, log=print, progress_path=None, progress_fingerprint=""
    ):
        self.features = features
        self.config = config or DownstreamConfig()
        self.log = log
        self.progress_path = Path(progress_path) if progress_path else None
        self.progress_fingerprint = str(progress_fingerprint)
        available = len(features.labels["train"])
        wanted = self.config.train_samples
        self.train_rows = (
            np.sort(np.random.default_rng(0).choice(available, wanted, replace=False))
            if wanted is not None and wanted < available
            else np.arange(available)
        )

    def train_one(self, seed, user_vectors=None, item_vectors=None, verbose=0):
        """Trains one ranker; returns it and its test (AUC, logloss)."""
        config = self.config
        set_random_seed(seed)
        ranker = DCNv2Ranker.from_features(
            self.features, user_vectors, item_vectors, num_experts=config.num_experts
        )
        ranker.compile(
            optimizer=keras.optimizers.AdamW(
                config.learning_rate, weight_decay=config.weight_decay
            ),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.AUC(from_logits=True, name="auc")],
        )
        inputs, labels = self.features.inputs, self.features.labels
        ranker.fit(
            {name: array[self.train_rows] for name, array in inputs["train"].items()},
            labels["train"][self.train_rows, None],
            batch_size=config.batch_size,
            epochs=config.max_epochs,
            validation_data=(inputs["validation"], labels["validation"][:, None]),
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor="val_auc",
                    mode="max",
                    patience=config.patience,
                    restore_best_weights=True,
                )
            ],
            verbose=verbose,
        )
        logits = ranker.predict(inputs["test"], batch_size=4 * config.batch_size, verbose=0)[:, 0]
        probabilities = 1.0 / (1.0 + np.exp(-logits.astype("float64")))
        return ranker, auc(labels["test"], logits), logloss(labels["test"], probabilities)

    def evaluate(self, representations):
        """Evaluates each representation with every seed.

        Args:
            representations: dict name -> `None` (no external vectors) or a
                callable `seed -> (user table, item table)` (either may be
                `None`), tables from `RankingFeatures.vector_table`. A callable
                lets each seed use vectors from its own upstream run.

        Returns:
            A list of rows: name, auc_mean, auc_std, logloss_mean,
            logloss_std, aucs, loglosses, seconds, and relaimpr against the
            "dcnv2" row when there is one.
        """
        rows = []
        finished = self._load_progress()
        for name, provider in representations.items():
            aucs, loglosses = [], []
            for seed in self.config.seeds:
                key = f"{name}/{seed}"
                if key not in finished:
                    seed_started = time.perf_counter()
                    tables = provider(seed) if provider is not None else (None, None)
                    _, test_auc, test_logloss = self.train_one(seed, *tables)
                    finished[key] = {
                        "auc": test_auc,
                        "logloss": test_logloss,
                        "seconds": time.perf_counter() - seed_started,
                    }
                    self._save_progress(finished)
                result = finished[key]
                aucs.append(result["auc"])
                loglosses.append(result["logloss"])
                self.log(
                    f"{name} seed {seed}: test AUC {result['auc']:.4f}, logloss {result['logloss']:.4f}"
                )
            seconds = sum(finished[f"{name}/{seed}"]["seconds"] for seed in self.config.seeds)
            rows.append(self.summary_row(name, aucs, loglosses, seconds))
        base = next((row for row in rows if row["name"] == BASELINE_ROW), None)
        if base is not None:
            for row in rows:
                row["relaimpr"] = relative_improvement(row["auc_mean"], base["auc_mean"])
        return rows

    def _settings(self):
        return {
            "config": json.loads(json.dumps(dataclasses.asdict(self.config))),
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

    @staticmethod
    def summary_row(name, aucs, loglosses, seconds):
        """One table row: mean and sample std of test AUC and logloss over seeds."""
        return {
            "name": name,
            "auc_mean": statistics.fmean(aucs),
            "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "logloss_mean": statistics.fmean(loglosses),
            "logloss_std": statistics.stdev(loglosses) if len(loglosses) > 1 else 0.0,
            "aucs": aucs,
            "loglosses": loglosses,
            "seconds": seconds,
        }
