"""The downstream DCNv2 built with TensorFlow Recommenders, run in its own process.

TFRS runs only on legacy Keras 2 (`tf-keras`, `TF_USE_LEGACY_KERAS=1`), which
cannot share a process with marc-keras' Keras 3 on torch (DESIGN.md Sec. 3).
This file therefore has two sides:

- the parent side (`TFRSRanker`, `read_store_vectors`, `check_store_coverage`)
  imports neither TensorFlow nor Keras: it takes the tier's inputs and the
  vector tables as numpy arrays, writes them to a temporary `.npz`, runs
  this file as a script and reads back a JSON result;
- the child side, `_child_main`, imports TensorFlow, `tf_keras` and
  `tensorflow_recommenders` inside the function, trains and scores the ranker.

The ranker is the Keras evaluator's (`DCNv2Ranker` trained by
`DownstreamEvaluator.train_one`), layer for layer, and every setting comes
from the same objects: the `DownstreamConfig` (learning rate, batch size,
epochs, early stopping, cross rank, experts, per-seed training subsample),
the `RankerTier` (which features) and the `AdaptorSetting` (the vector
adaptors' regularisation), with the shape constants of
`marc_keras.config.downstream_config`.

This is the only module of the package that imports TensorFlow.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from marc_keras.config.downstream_config import (
    ADAPTOR_HIDDEN_UNITS,
    CROSS_LAYERS,
    DEEP_UNITS,
    EMBEDDING_DIM,
    DownstreamConfig,
)
from marc_keras.config.ranker_tier import resolve_tier
from marc_keras.export.embedding_store import load_embedding_table
from marc_keras.ranking.ranking_features import training_rows

if TYPE_CHECKING:
    from marc_keras.config.adaptor_setting import AdaptorSetting
    from marc_keras.config.ranker_tier import RankerTier
    from marc_keras.ranking.ranking_features import RankingFeatures

SPLITS = ("train", "validation", "test")
TOWERS = ("user", "item")
# The inputs of `RankingFeatures.tier_inputs`, as DCNv2Ranker reads them.
SAMPLE_KEYS = ("user", "item", "history_items", "history_genres", "history_ratings", "user_fields")
# A store may lack vectors for at most this share of the distinct users (or
# items) the split needs; those map to the out-of-vocabulary row: the training mean.
# More than that means the store was encoded for other data.
MAX_MISSING_FRACTION = 0.01
STDERR_TAIL_LINES = 25


def read_store_vectors(
    path: str | os.PathLike, column: str = "compressed", expected_dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reads one vector column of an embedding store, ids as strings.

    Args:
        path: an embedding store (`.parquet`, see `EmbeddingStore`).
        column: the vector column, e.g. "compressed" or "original".
        expected_dim: the vector width the caller was configured for, or
            `None` to take the store's.

    Returns:
        `(ids, vectors)`: a numpy str array and float32 (N, d) vectors.

    Raises:
        ValueError: the width differs from `expected_dim`, or the store
            repeats an id; the message names the store file.

    Example:
    >>> ids, vectors = read_store_vectors("users.parquet", "compressed", expected_dim=128)
    """
    try:
        ids, vectors, _ = load_embedding_table(path, column)
    except ValueError as error:
        if str(path) in str(error):
            raise
        # E.g. numpy's reshape error when the schema's widths do not match the rows.
        raise ValueError(
            f"Embedding store '{path}' could not be read ({error}); it is damaged or was "
            "altered. Re-encode it with `marc-keras encode`."
        ) from error
    ids = np.asarray([str(identifier) for identifier in ids.tolist()], dtype=str)
    if expected_dim is not None and vectors.shape[1] != int(expected_dim):
        raise ValueError(
            f"Embedding store '{path}' holds {vectors.shape[1]}-d '{column}' vectors, but the "
            f"ranker was set up for {expected_dim}-d ones; pass the store encoded for this "
            "setting or change the dimension."
        )
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"Embedding store '{path}' holds some ids more than once; re-encode it.")
    return ids, vectors


def check_store_coverage(
    path: str | os.PathLike,
    store_ids: np.ndarray,
    needed_ids: Iterable,
    max_missing_fraction: float = MAX_MISSING_FRACTION,
) -> list[str]:
    """Finds the ids a split needs that a store has no vector for.

    Args:
        path: the store file, for the error message.
        store_ids: the store's ids (from `read_store_vectors`).
        needed_ids: the ids the split needs (any type; compared as strings).
        max_missing_fraction: the largest share of the distinct needed ids
            the store may lack; rankers give those the training mean.

    Returns:
        The sorted list of needed ids (as strings) without a vector.

    Raises:
        ValueError: more than `max_missing_fraction` of them are missing.

    Example:
    >>> check_store_coverage("users.parquet", ids, ["1", "2", "3"])
    []
    """
    needed = np.unique(np.asarray([str(identifier) for identifier in needed_ids], dtype=str))
    missing = np.setdiff1d(needed, store_ids).tolist()
    if len(missing) > max_missing_fraction * len(needed):
        raise ValueError(
            f"Embedding store '{path}' has no vector for {len(missing)} of the {len(needed)} ids "
            f"the split needs (more than {max_missing_fraction:.0%}; e.g. {missing[:5]}). "
            "Encode every user and item of this dataset into it with `marc-keras encode`."
        )
    return missing


class TFRSRanker:
    """Trains the downstream DCNv2 with TensorFlow Recommenders; scores test users.

    The same model as `DCNv2Ranker` and the same training as
    `DownstreamEvaluator.train_one`, built from the same settings: the
    tier's fields (item id, item genres, history items, genres and ratings,
    the categorical user columns when the tier has them; each
    `EMBEDDING_DIM` wide), each vector table through a gated mixture of
    `num_experts` experts (hidden `ADAPTOR_HIDDEN_UNITS`) with the
    `AdaptorSetting`'s input dropout, expert dropout, input noise, L2 and
    user width, `CROSS_LAYERS` `tfrs.layers.dcn.Cross` layers of rank
    `cross_projection_dim` (glorot-uniform kernels, as keras-rs'
    `FeatureCross`), a deep tower `DEEP_UNITS` and one logit; binary
    cross-entropy (`tfrs.tasks.Ranking`) and AdamW with the config's
    learning rate, weight decay, batch size and epoch limit, stopping early
    on the exact validation AUC (`ctr_metrics.auc`) with the best epoch's
    weights restored. Each seed trains on its own subsample from
    `ranking_features.training_rows` (`config.train_samples`, the seed), the
    one the Keras evaluator draws for that seed. Test AUC and
    logloss come from `marc_keras.ranking.ctr_metrics`, like the Keras
    evaluator's. Only the random draws (initial weights, data order,
    dropout) differ between the engines.

    Training runs in a child Python process (legacy Keras 2 cannot live beside
    Keras 3): the inputs go across as a temporary `.npz`, the child's
    progress lines go to `log`, and its result comes back as JSON.

    Args:
        config: a `DownstreamConfig` (the run's `[evaluate]` table), by
            default its defaults.
        threads: TensorFlow intra- and inter-op threads, `None` for its default.
        log: callable taking one progress line.

    Example:
    >>> ranker = TFRSRanker(DownstreamConfig(seeds=(0, 1, 2)))
    >>> result = ranker.evaluate(features, "kar", user_table, item_table)
    >>> [run["test_auc"] for run in result["runs"]]
    [0.79, 0.79, 0.79]
    """

    def __init__(
        self,
        config: DownstreamConfig | None = None,
        threads: int | None = None,
        log: Callable[[str], object] = print,
    ) -> None:
        self.config = config or DownstreamConfig()
        if self.config.ranker != "dcnv2":
            raise ValueError(
                f"The tfrs engine builds DCNv2 only; evaluate.ranker is '{self.config.ranker}'. "
                "Use --engine keras for the other rankers, or set evaluate.ranker=dcnv2."
            )
        self.threads = None if threads is None else int(threads)
        self.log = log

    def settings(
        self,
        tier: RankerTier,
        user_field_sizes: Iterable[int],
        seeds: Iterable[int],
        adaptor: AdaptorSetting,
    ) -> dict:
        """What the child process builds and trains, all read from the config, tier and adaptor."""
        config = self.config
        return {
            "tier": tier.name,
            "seeds": [int(seed) for seed in seeds],
            "max_epochs": config.max_epochs,
            "patience": config.patience,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "weight_decay": config.weight_decay,
            "num_experts": config.num_experts,
            "cross_projection_dim": config.cross_projection_dim,
            "embedding_dim": EMBEDDING_DIM,
            "cross_layers": CROSS_LAYERS,
            "deep_units": list(DEEP_UNITS),
            "adaptor_hidden_units": list(ADAPTOR_HIDDEN_UNITS),
            "adaptor": dataclasses.asdict(adaptor),
            "user_field_sizes": [int(size) for size in user_field_sizes]
            if tier.user_fields
            else [],
            "threads": self.threads,
        }

    def evaluate(
        self,
        features: RankingFeatures,
        tier: str | RankerTier,
        user_vectors: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
        seeds: Iterable[int] | None = None,
        adaptor: AdaptorSetting | None = None,
    ) -> dict:
        """Trains one ranker per seed in a child process and scores test users.

        Args:
            features: a `RankingFeatures` (its `tier_inputs`,
                `item_genre_shares`, `labels` and `user_field_sizes` are used).
            tier: a tier name ("kar", "full") or `RankerTier`.
            user_vectors: optional table from `RankingFeatures.vector_table`
                (row = user index), as `DownstreamEvaluator.train_one` takes it.
            item_vectors: likewise for items.
            seeds: one training per seed, by default the config's `seeds`.
            adaptor: the vector adaptors' `AdaptorSetting`, by default the
                config's generic one.

        Returns:
            A dict: `runs` (per seed: `seed`, `test_auc`, `test_logloss`,
            `validation_auc` per epoch, `best_epoch`, `epochs`,
            `train_samples`, `trainable_parameters`, `seconds`), `tier`, `settings` (what the child
            trained with) and `seconds` (wall time, process start-up included).

        Raises:
            RuntimeError: the child process failed; the message ends with
                the tail of its stderr.
        """
        started = time.perf_counter()
        tier = resolve_tier(tier) if isinstance(tier, str) else tier
        seeds = self.config.seeds if seeds is None else tuple(seeds)
        adaptor = adaptor or self.config.adaptor_setting()
        arrays = self._arrays(features, tier, seeds, {"user": user_vectors, "item": item_vectors})
        settings = self.settings(tier, features.user_field_sizes, seeds, adaptor)
        with tempfile.TemporaryDirectory(prefix="marc-keras-tfrs-") as directory:
            directory = Path(directory)
            np.savez(directory / "inputs.npz", **arrays)
            (directory / "settings.json").write_text(json.dumps(settings))
            self._run_child(directory)
            result = json.loads((directory / "result.json").read_text())
        result.update(tier=tier.name, settings=settings, seconds=time.perf_counter() - started)
        return result

    def _arrays(self, features, tier, seeds, tables):
        inputs = features.tier_inputs(tier)
        arrays = {"item_genre_shares": np.asarray(features.item_genre_shares(tier), "float32")}
        for split in SPLITS:
            for key in SAMPLE_KEYS:
                arrays[f"{split}/{key}"] = np.asarray(inputs[split][key])
            arrays[f"{split}/label"] = np.asarray(features.labels[split], "float32")
        available = len(arrays["train/label"])
        for seed in seeds:
            # The Keras evaluator's subsample for this seed.
            arrays[f"rows/{int(seed)}"] = training_rows(
                available, self.config.train_samples, int(seed)
            )
        for tower, table in tables.items():
            if table is None:
                continue
            table = np.asarray(table, "float32")
            arrays[f"{tower}_table"] = table
            # The noise scale, from all training samples' rows as DCNv2Ranker.from_features
            # sets it (ExpertAdaptor.adapt).
            arrays[f"{tower}_std"] = (
                table[np.unique(inputs["train"][tower])].astype("float64").std(axis=0)
            ).astype("float32")
        return arrays

    def _run_child(self, directory):
        environment = dict(os.environ)
        # The child must get tf.keras = legacy Keras 2, and never Keras 3 on torch.
        environment.pop("KERAS_BACKEND", None)
        environment["TF_USE_LEGACY_KERAS"] = "1"
        environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # Run as a file; the package modules it imports (`marc_keras`,
        # `marc_keras.ranking`, `marc_keras.export`) load neither Keras 3 nor
        # torch. `-P` keeps this file's folder off sys.path so sibling
        # modules shadow nothing.
        command = [
            sys.executable,
            "-P",
            str(Path(__file__).resolve()),
            "--inputs",
            str(directory / "inputs.npz"),
            "--settings",
            str(directory / "settings.json"),
            "--result",
            str(directory / "result.json"),
        ]
        stderr_path = directory / "stderr.txt"
        with (
            open(stderr_path, "w") as stderr,
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=environment
            ) as child,
        ):
            for line in child.stdout:
                self.log(line.rstrip("\n"))
            returncode = child.wait()
        if returncode != 0:
            with open(stderr_path, errors="replace") as stderr:
                tail = "".join(
                    collections.deque(
                        (line for line in stderr if line.strip()), maxlen=STDERR_TAIL_LINES
                    )
                )
            raise RuntimeError(
                f"The TFRS ranker process failed with exit code {returncode}:\n{tail.strip()}"
            )


def _load_ctr_metrics():
    # Loaded by path, so the child depends on nothing but this file's folder
    # for its metrics; the file needs numpy only and scores with the same AUC
    # as the Keras evaluator.
    path = Path(__file__).with_name("ctr_metrics.py")
    spec = importlib.util.spec_from_file_location("marc_keras_ctr_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_model(tf, tfrs, arrays, settings):
    """The TFRS DCNv2 ranker (a `tfrs.models.Model`): `DCNv2Ranker` layer for layer."""
    embedding_dim = settings["embedding_dim"]
    adaptor = settings["adaptor"]
    genre_shares = arrays["item_genre_shares"]  # (items + 1, genres + 1)

    class ExpertAdaptor(tf.keras.layers.Layer):
        """`marc_keras.ranking.expert_adaptor.ExpertAdaptor` in legacy Keras 2."""

        def __init__(self, output_dim, std, **kwargs):
            super().__init__(**kwargs)
            decay = adaptor["weight_decay"]
            regularizer = tf.keras.regularizers.L2(decay) if decay else None
            self.dropout = (
                tf.keras.layers.Dropout(adaptor["input_dropout"])
                if adaptor["input_dropout"]
                else None
            )
            self.noise = adaptor["input_noise"] * tf.constant(std)
            self.experts = []
            for _ in range(settings["num_experts"]):
                layers = []
                for units in settings["adaptor_hidden_units"]:
                    layers.append(
                        tf.keras.layers.Dense(
                            units, activation="relu", kernel_regularizer=regularizer
                        )
                    )
                    if adaptor["expert_dropout"]:
                        layers.append(tf.keras.layers.Dropout(adaptor["expert_dropout"]))
                layers.append(tf.keras.layers.Dense(output_dim, kernel_regularizer=regularizer))
                self.experts.append(layers)
            self.gate = tf.keras.layers.Dense(
                settings["num_experts"], activation="softmax", kernel_regularizer=regularizer
            )

        def call(self, vectors, training=None):
            if training and adaptor["input_noise"]:
                vectors = vectors + tf.random.normal(tf.shape(vectors)) * self.noise
            if self.dropout is not None:
                vectors = self.dropout(vectors, training=training)
            outputs = []
            for layers in self.experts:
                x = vectors
                for layer in layers:
                    x = layer(x, training=training)
                outputs.append(x)
            weights = self.gate(vectors)[:, :, None]  # (B, E, 1)
            return tf.reduce_sum(tf.stack(outputs, axis=1) * weights, axis=1)

    class StoreRanker(tfrs.models.Model):
        def __init__(self):
            super().__init__()
            self.genre_shares = tf.constant(genre_shares)
            self.item_embedding = tf.keras.layers.Embedding(genre_shares.shape[0], embedding_dim)
            # Dense layers without bias over shares = embedding tables (as DCNv2Ranker).
            self.genre_embedding = tf.keras.layers.Dense(embedding_dim, use_bias=False)
            self.rating_embedding = tf.keras.layers.Dense(embedding_dim, use_bias=False)
            self.user_field_embeddings = [
                tf.keras.layers.Embedding(size, embedding_dim)
                for size in settings["user_field_sizes"]
            ]
            self.tables, self.adaptors = {}, {}
            for tower in TOWERS:
                if f"{tower}_table" not in arrays:
                    continue
                self.tables[tower] = tf.constant(arrays[f"{tower}_table"])
                width = adaptor["user_dim"] if tower == "user" else None
                self.adaptors[tower] = ExpertAdaptor(
                    width or embedding_dim, arrays[f"{tower}_std"], name=f"{tower}_adaptor"
                )
            self.crosses = [
                # keras-rs' FeatureCross initialises its kernels glorot-uniform; TFRS' default
                # is a truncated normal.
                tfrs.layers.dcn.Cross(
                    projection_dim=settings["cross_projection_dim"],
                    kernel_initializer="glorot_uniform",
                )
                for _ in range(settings["cross_layers"])
            ]
            self.deep = [
                tf.keras.layers.Dense(units, activation="relu") for units in settings["deep_units"]
            ]
            self.logit = tf.keras.layers.Dense(1)
            self.task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True)
            )

        def call(self, features, training=None):
            item, history = features["item"], features["history_items"]  # (B,), (B, H)
            mask = tf.cast(history > 0, tf.float32)[..., None]  # (B, H, 1)
            history_mean = tf.reduce_sum(self.item_embedding(history) * mask, axis=-2) / (
                tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)
            )
            fields = [
                self.item_embedding(item),
                self.genre_embedding(tf.gather(self.genre_shares, item)),
                history_mean,
                self.genre_embedding(features["history_genres"]),
                self.rating_embedding(features["history_ratings"]),
            ]
            for index, embedding in enumerate(self.user_field_embeddings):
                fields.append(embedding(features["user_fields"][:, index]))
            for tower, table in self.tables.items():
                vectors = tf.gather(table, features[tower])
                fields.append(self.adaptors[tower](vectors, training=training))
            x0 = tf.concat(fields, axis=-1)
            x = x0
            for cross in self.crosses:
                x = cross(x0, x)
            for layer in self.deep:
                x = layer(x)
            return self.logit(x)

        def compute_loss(self, inputs, training=False):
            features, labels = inputs
            predictions = self(features, training=training)
            return self.task(labels=labels, predictions=predictions, training=training)

    return StoreRanker()


def _child_main(argv=None):
    """Trains and scores the TFRS ranker; the entry point of the child process."""
    parser = argparse.ArgumentParser(description="TFRS ranker child process of marc-keras.")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tensorflow as tf
        import tensorflow_recommenders as tfrs
    except ImportError as error:
        raise RuntimeError(
            f"The tfrs ranking engine (--engine tfrs) needs TensorFlow Recommenders ({error}); "
            "install the extra with `pip install 'marc-keras[tfrs]'` or use --engine keras."
        ) from error

    if not tf.keras.__name__.startswith("tf_keras") or "keras" in sys.modules:
        raise RuntimeError(
            "The TFRS ranker needs tf.keras to be legacy Keras 2 (tf-keras) and Keras 3 not to be "
            "loaded; install the extra with `pip install 'marc-keras[tfrs]'` and run it through "
            "TFRSRanker, which sets TF_USE_LEGACY_KERAS=1."
        )
    settings = json.loads(Path(args.settings).read_text())
    if settings["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(settings["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(settings["threads"])
    metrics = _load_ctr_metrics()
    with np.load(args.inputs) as stored:
        arrays = {key: stored[key] for key in stored.files}
    keys = [key for key in SAMPLE_KEYS if key != "user_fields" or settings["user_field_sizes"]]

    def features(split, rows=slice(None)):
        return {key: arrays[f"{split}/{key}"][rows] for key in keys}

    def predict(model, split):
        data = tf.data.Dataset.from_tensor_slices(features(split))
        logits = model.predict(data.batch(4 * settings["batch_size"]), verbose=0)
        return logits[:, 0].astype("float64")

    class ValidationAUC(tf.keras.callbacks.Callback):
        """`marc_keras.ranking.validation_auc.ValidationAUC`: the exact AUC as `val_auc`."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["val_auc"] = metrics.auc(
                    arrays["validation/label"], predict(self.model, "validation")
                )

    runs = []
    for seed in settings["seeds"]:
        started = time.perf_counter()
        rows = arrays[f"rows/{seed}"]
        tf.keras.utils.set_random_seed(seed)
        model = _build_model(tf, tfrs, arrays, settings)
        model.compile(
            optimizer=tf.keras.optimizers.AdamW(
                settings["learning_rate"], weight_decay=settings["weight_decay"]
            )
        )

        def report(epoch, logs, seed=seed):
            print(
                f"tfrs {settings['tier']} seed {seed} epoch {epoch + 1}: loss {logs['loss']:.4f}, "
                f"validation AUC {logs['val_auc']:.4f}",
                flush=True,
            )

        train = tf.data.Dataset.from_tensor_slices(
            (features("train", rows), arrays["train/label"][rows, None])
        )
        history = model.fit(
            train.shuffle(len(rows), seed=seed).batch(settings["batch_size"]),
            epochs=settings["max_epochs"],
            callbacks=[
                ValidationAUC(),
                tf.keras.callbacks.EarlyStopping(
                    monitor="val_auc",
                    mode="max",
                    patience=settings["patience"],
                    restore_best_weights=True,
                ),
                tf.keras.callbacks.LambdaCallback(on_epoch_end=report),
            ],
            verbose=0,
        )
        logits = predict(model, "test")
        labels = arrays["test/label"]
        validation_auc = [float(value) for value in history.history["val_auc"]]
        run = {
            "seed": seed,
            "test_auc": metrics.auc(labels, logits),
            "test_logloss": metrics.logloss(labels, 1.0 / (1.0 + np.exp(-logits))),
            "validation_auc": validation_auc,
            "best_epoch": int(np.argmax(validation_auc)) + 1,
            "epochs": len(validation_auc),
            "train_samples": len(rows),
            "trainable_parameters": int(
                sum(np.prod(weight.shape) for weight in model.trainable_weights)
            ),
            "seconds": time.perf_counter() - started,
        }
        print(
            f"tfrs {settings['tier']} seed {seed}: test AUC {run['test_auc']:.4f}, "
            f"logloss {run['test_logloss']:.4f}, {run['epochs']} epochs",
            flush=True,
        )
        runs.append(run)
    Path(args.result).write_text(json.dumps({"runs": runs}))


if __name__ == "__main__":
    _child_main()
