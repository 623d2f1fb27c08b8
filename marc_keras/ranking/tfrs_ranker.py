"""A TensorFlow Recommenders DCNv2 ranker over embedding stores, run in its own process.

TFRS runs only on legacy Keras 2 (`tf-keras`, `TF_USE_LEGACY_KERAS=1`), which
cannot share a process with marc-keras' Keras 3 on torch (DESIGN.md Sec. 3).
This file therefore has two sides:

- the parent side (`TFRSRanker`, `read_store_vectors`, `check_store_coverage`)
  imports neither TensorFlow nor Keras: it reads the stores with numpy, writes
  the split to a temporary `.npz`, runs this file as a script and reads back
  a JSON result;
- the child side, `_child_main`, imports TensorFlow, `tf_keras` and
  `tensorflow_recommenders` inside the function, trains and scores the ranker.

This is the only module of the package that imports TensorFlow.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from marc_keras.export.embedding_store import load_embedding_table
from marc_keras.ranking.vector_centering import center

if TYPE_CHECKING:
    from marc_keras.ranking.ranking_features import RankingFeatures

SPLITS = ("train", "validation", "test")
TOWERS = ("user", "item")
SAMPLE_KEYS = ("item", "history_items", "history_ratings", "user_fields")
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


def _index_to_id(vocabulary):
    """`{id: index from 1}` -> str array with [index] = id; [0] (unknown) is ""."""
    names = np.empty(len(vocabulary) + 1, dtype=object)
    names[0] = ""
    for identifier, index in vocabulary.items():
        names[index] = str(identifier)
    return names


class TFRSRanker:
    """Trains a TFRS DCNv2 on the split with frozen store vectors; scores test users.

    The same features as `DCNv2Ranker` (item id, item genres, history items,
    ratings and genres, the categorical user columns; each 32-d), plus each
    store's vectors: a `StringLookup` over the store ids feeds a frozen
    `Embedding` holding the vectors (row 0, unknown ids, is zeros), then a
    small dense projection [128] -> 32. Three full-matrix
    `tfrs.layers.dcn.Cross` layers, a deep tower [200, 80] and one logit,
    trained with `tfrs.tasks.Ranking` (BCE) and AdamW, stopping early on
    validation AUC with the best weights restored. Test AUC and logloss come
    from `marc_keras.ranking.ctr_metrics`, like the Keras evaluator's.

    Training runs in a child Python process (legacy Keras 2 cannot live beside
    Keras 3): the split goes across as a temporary `.npz`, the child's
    progress lines go to `log`, and its result comes back as JSON.

    Args:
        user_store: embedding store of user vectors.
        item_store: embedding store of item vectors.
        column: the vector column to read from both stores.
        user_vector_dim: expected user vector width, `None` for the store's.
        item_vector_dim: expected item vector width, `None` for the store's.
        max_epochs: epoch limit.
        patience: epochs without validation AUC gain before stopping.
        batch_size: samples per step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        embedding_dim: width of every field.
        cross_layers: number of `Cross` layers.
        deep_units: sizes of the deep tower.
        projection_units: hidden sizes of the store vector projections.
        threads: TensorFlow intra-op threads, `None` for its default.
        max_missing_fraction: see `check_store_coverage`.
        log: callable taking one progress line.

    Raises:
        ValueError: a store's width differs from the one given, or it repeats
            ids (see `read_store_vectors`).
        KeyError: a store has no such column.

    Example:
    >>> ranker = TFRSRanker("users.parquet", "items.parquet", column="compressed")
    >>> result = ranker.evaluate(features, seeds=(0, 1, 2))
    >>> [run["test_auc"] for run in result["runs"]]
    [0.79, 0.79, 0.79]
    """

    def __init__(
        self,
        user_store: str | os.PathLike,
        item_store: str | os.PathLike,
        column: str = "compressed",
        user_vector_dim: int | None = None,
        item_vector_dim: int | None = None,
        max_epochs: int = 5,
        patience: int = 1,
        batch_size: int = 1024,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        embedding_dim: int = 32,
        cross_layers: int = 3,
        deep_units: Sequence[int] = (200, 80),
        projection_units: Sequence[int] = (128,),
        threads: int | None = None,
        max_missing_fraction: float = MAX_MISSING_FRACTION,
        log: Callable[[str], object] = print,
    ) -> None:
        self.paths = {"user": Path(user_store), "item": Path(item_store)}
        self.column = column
        # Read now, so a store that does not fit fails before the split is built.
        self.stores = {
            "user": read_store_vectors(self.paths["user"], column, user_vector_dim),
            "item": read_store_vectors(self.paths["item"], column, item_vector_dim),
        }
        self.settings = {
            "max_epochs": int(max_epochs),
            "patience": int(patience),
            "batch_size": int(batch_size),
            "learning_rate": float(learning_rate),
            "weight_decay": float(weight_decay),
            "embedding_dim": int(embedding_dim),
            "cross_layers": int(cross_layers),
            "deep_units": [int(units) for units in deep_units],
            "projection_units": [int(units) for units in projection_units],
            "threads": None if threads is None else int(threads),
        }
        self.max_missing_fraction = float(max_missing_fraction)
        self.log = log

    def evaluate(
        self,
        features: RankingFeatures,
        seeds: Iterable[int] = (0,),
        train_rows: np.ndarray | None = None,
    ) -> dict:
        """Trains one ranker per seed in a child process and scores test users.

        Args:
            features: a `RankingFeatures`, or any object with its `inputs`,
                `labels`, `item_genres`, `user_field_sizes`,
                `user_vocabulary` and `item_vocabulary`.
            seeds: one training per seed.
            train_rows: indices of the training samples to use (e.g.
                `DownstreamEvaluator.train_rows`), `None` for all.

        Returns:
            A dict: `runs` (per seed: `seed`, `test_auc`, `test_logloss`,
            `validation_auc` per epoch, `best_epoch`, `seconds`), `missing`
            (per tower, how many needed ids the store lacked), `column` and
            `seconds` (wall time, process start-up included).

        Raises:
            ValueError: a store lacks too many of the split's ids (see
                `check_store_coverage`).
            RuntimeError: the child process failed; the message ends with
                the tail of its stderr.
        """
        started = time.perf_counter()
        arrays, missing = self._arrays(features, train_rows)
        settings = {
            **self.settings,
            "seeds": [int(seed) for seed in seeds],
            "user_field_sizes": [int(size) for size in features.user_field_sizes],
        }
        with tempfile.TemporaryDirectory(prefix="marc-keras-tfrs-") as directory:
            directory = Path(directory)
            np.savez(directory / "inputs.npz", **arrays)
            (directory / "settings.json").write_text(json.dumps(settings))
            self._run_child(directory)
            result = json.loads((directory / "result.json").read_text())
        result.update(missing=missing, column=self.column, seconds=time.perf_counter() - started)
        return result

    def _arrays(self, features, train_rows):
        arrays = {"item_genres": np.asarray(features.item_genres, "int32")}
        names = {
            "user": _index_to_id(features.user_vocabulary),
            "item": _index_to_id(features.item_vocabulary),
        }
        for split in SPLITS:
            rows = train_rows if split == "train" and train_rows is not None else slice(None)
            inputs = features.inputs[split]
            for key in SAMPLE_KEYS:
                arrays[f"{split}/{key}"] = np.asarray(inputs[key])[rows]
            for tower in TOWERS:
                # Ids cross as strings: the child looks them up in the store's StringLookup.
                arrays[f"{split}/{tower}_id"] = names[tower][
                    np.asarray(inputs[tower])[rows]
                ].astype(str)
            arrays[f"{split}/label"] = np.asarray(features.labels[split], "float32")[rows]
        missing = {}
        for tower in TOWERS:
            ids, vectors = self.stores[tower]
            needed = np.unique(np.concatenate([arrays[f"{split}/{tower}_id"] for split in SPLITS]))
            absent = check_store_coverage(self.paths[tower], ids, needed, self.max_missing_fraction)
            if absent:
                self.log(
                    f"{len(absent)} of {len(needed)} {tower}s have no vector in "
                    f"{self.paths[tower]}; they get the training mean"
                )
            # Centered as the Keras evaluator centers them (RankingFeatures.vector_table).
            training = np.isin(ids, np.unique(arrays[f"train/{tower}_id"]))
            arrays[f"{tower}_store/ids"], arrays[f"{tower}_store/vectors"] = (
                ids,
                center(vectors, vectors[training]),
            )
            missing[tower] = len(absent)
        return arrays, missing

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
    """The TFRS DCNv2 ranker (a `tfrs.models.Model`) for the split in `arrays`."""
    embedding_dim = settings["embedding_dim"]
    num_items = arrays["item_genres"].shape[0]
    num_genres = int(arrays["item_genres"].max()) + 1
    num_ratings = (
        max(int(arrays[f"{split}/history_ratings"].max(initial=0)) for split in SPLITS) + 1
    )

    def masked_mean(embedded, mask):
        # embedded (..., L, D), mask (..., L) -> (..., D)
        mask = tf.cast(mask, embedded.dtype)[..., None]
        return tf.reduce_sum(embedded * mask, axis=-2) / tf.maximum(
            tf.reduce_sum(mask, axis=-2), 1.0
        )

    def dense_stack(units, name):
        layers = [tf.keras.layers.Dense(width, activation="relu") for width in units]
        return tf.keras.Sequential([*layers, tf.keras.layers.Dense(embedding_dim)], name=name)

    class StoreRanker(tfrs.models.Model):
        def __init__(self):
            super().__init__()
            self.genre_table = tf.constant(arrays["item_genres"])
            self.item_embedding = tf.keras.layers.Embedding(num_items, embedding_dim)
            self.genre_embedding = tf.keras.layers.Embedding(num_genres, embedding_dim)
            self.rating_embedding = tf.keras.layers.Embedding(num_ratings, embedding_dim)
            self.user_field_embeddings = [
                tf.keras.layers.Embedding(size, embedding_dim)
                for size in settings["user_field_sizes"]
            ]
            self.lookups, self.store_embeddings, self.projections = {}, {}, {}
            for tower in TOWERS:
                ids, vectors = arrays[f"{tower}_store/ids"], arrays[f"{tower}_store/vectors"]
                # One OOV index (0) and no mask token: store ids map to 1..N.
                self.lookups[tower] = tf.keras.layers.StringLookup(
                    vocabulary=ids, num_oov_indices=1, mask_token=None
                )
                table = np.concatenate([np.zeros((1, vectors.shape[1]), "float32"), vectors])
                self.store_embeddings[tower] = tf.keras.layers.Embedding(
                    len(table),
                    vectors.shape[1],
                    embeddings_initializer=tf.keras.initializers.Constant(table),
                    trainable=False,
                )
                self.projections[tower] = dense_stack(
                    settings["projection_units"], f"{tower}_projection"
                )
            self.crosses = [tfrs.layers.dcn.Cross() for _ in range(settings["cross_layers"])]
            self.deep = [
                tf.keras.layers.Dense(units, activation="relu") for units in settings["deep_units"]
            ]
            self.logit = tf.keras.layers.Dense(1)
            self.task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")],
            )

        def genre_field(self, items):
            genres = tf.gather(self.genre_table, items)  # (..., G)
            return masked_mean(self.genre_embedding(genres), genres > 0)

        def call(self, features):
            item, history = features["item"], features["history_items"]  # (B,), (B, H)
            history_mask = history > 0
            fields = [
                self.item_embedding(item),
                self.genre_field(item),
                masked_mean(self.item_embedding(history), history_mask),
                masked_mean(self.rating_embedding(features["history_ratings"]), history_mask),
                masked_mean(self.genre_field(history), history_mask),
            ]
            for index, embedding in enumerate(self.user_field_embeddings):
                fields.append(embedding(features["user_fields"][:, index]))
            for tower in TOWERS:
                vectors = self.store_embeddings[tower](self.lookups[tower](features[f"{tower}_id"]))
                fields.append(self.projections[tower](vectors))
            x0 = tf.concat(fields, axis=-1)
            x = x0
            for cross in self.crosses:
                x = cross(x0, x)
            for layer in self.deep:
                x = layer(x)
            return self.logit(x)

        def compute_loss(self, inputs, training=False):
            features, labels = inputs
            return self.task(labels=labels, predictions=self(features), training=training)

    return StoreRanker()


def _child_main(argv=None):
    """Trains and scores the TFRS ranker; the entry point of the child process."""
    parser = argparse.ArgumentParser(description="TFRS ranker child process of marc-keras.")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    if not tf.keras.__name__.startswith("tf_keras") or "keras" in sys.modules:
        raise RuntimeError(
            "The TFRS ranker needs tf.keras to be legacy Keras 2 (tf-keras) and Keras 3 not to be "
            "loaded; install the extra with `pip install 'marc-keras[tfrs]'` and run it through "
            "TFRSRanker, which sets TF_USE_LEGACY_KERAS=1."
        )
    settings = json.loads(Path(args.settings).read_text())
    if settings["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(settings["threads"])
    metrics = _load_ctr_metrics()
    with np.load(args.inputs) as stored:
        arrays = {key: stored[key] for key in stored.files}

    def dataset(split, batch_size, shuffle_seed=None):
        features = {key: arrays[f"{split}/{key}"] for key in SAMPLE_KEYS}
        features.update({f"{tower}_id": arrays[f"{split}/{tower}_id"] for tower in TOWERS})
        data = tf.data.Dataset.from_tensor_slices((features, arrays[f"{split}/label"][:, None]))
        if shuffle_seed is not None:
            data = data.shuffle(len(arrays[f"{split}/label"]), seed=shuffle_seed)
        return data.batch(batch_size)

    batch_size = settings["batch_size"]
    runs = []
    for seed in settings["seeds"]:
        started = time.perf_counter()
        tf.keras.utils.set_random_seed(seed)
        model = _build_model(tf, tfrs, arrays, settings)
        model.compile(
            optimizer=tf.keras.optimizers.AdamW(
                settings["learning_rate"], weight_decay=settings["weight_decay"]
            )
        )

        def report(epoch, logs, seed=seed):
            print(
                f"tfrs seed {seed} epoch {epoch + 1}: train AUC {logs['auc']:.4f}, "
                f"validation AUC {logs['val_auc']:.4f}",
                flush=True,
            )

        history = model.fit(
            dataset("train", batch_size, shuffle_seed=seed),
            validation_data=dataset("validation", 4 * batch_size),
            epochs=settings["max_epochs"],
            callbacks=[
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
        test = dataset("test", 4 * batch_size).map(lambda features, labels: features)
        logits = model.predict(test, verbose=0)[:, 0].astype("float64")
        labels = arrays["test/label"]
        validation_auc = [float(value) for value in history.history["val_auc"]]
        run = {
            "seed": seed,
            "test_auc": metrics.auc(labels, logits),
            "test_logloss": metrics.logloss(labels, 1.0 / (1.0 + np.exp(-logits))),
            "validation_auc": validation_auc,
            "best_epoch": int(np.argmax(validation_auc)) + 1,
            "seconds": time.perf_counter() - started,
        }
        print(
            f"tfrs seed {seed}: test AUC {run['test_auc']:.4f}, logloss {run['test_logloss']:.4f}",
            flush=True,
        )
        runs.append(run)
    Path(args.result).write_text(json.dumps({"runs": runs}))


if __name__ == "__main__":
    _child_main()
