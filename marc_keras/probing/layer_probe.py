"""Layer-wise probing: score every layer's pooled vectors downstream (the MRA curve,
DESIGN.md Sec. 5).

MARC's motivation is the mid-layer representation advantage: after
fine-tune-then-compress training, a middle layer of the LLM gives a better
downstream ranker than the last one. The probe pools every layer of a
backbone for every user and item text, trains the downstream DCNv2 on each
layer's vectors, and reports test AUC per layer. `marc_keras.experiments.probe`
runs it over trained runs and the frozen backbone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.utils.atomic_files import write_atomically
from marc_keras.utils.length_batches import encode_in_length_order

if TYPE_CHECKING:
    from marc_keras.config.downstream_config import DownstreamConfig
    from marc_keras.data.kar_split import KARSplit
    from marc_keras.layers.compression_network import CompressionNetwork
    from marc_keras.ranking.ranking_features import RankingFeatures

TOWERS = ("user", "item")


@dataclasses.dataclass
class LayerVectors:
    """Every layer's pooled vectors for the users and items of a split.

    Args:
        user_ids: (U,) ids, sorted.
        users: (U, L + 1, d) float32: the pooled embeddings, then each block.
        item_ids: (I,) ids, sorted.
        items: (I, L + 1, d) float32.
        compressed: `None`, or {"user": (U, k), "item": (I, k)}: a trained
            MARC's compressed vectors (MARC-C) of the same texts.
    """

    user_ids: np.ndarray
    users: np.ndarray
    item_ids: np.ndarray
    items: np.ndarray
    compressed: dict | None = None

    @property
    def num_layers(self) -> int:
        """L + 1: the embeddings and the L blocks."""
        return self.users.shape[1]

    def save(self, path: str | os.PathLike, fingerprint: str = "") -> None:
        """Writes an `.npz` atomically; `fingerprint` names what made the vectors."""
        arrays = {
            "fingerprint": np.array(fingerprint),
            "user_ids": np.asarray(self.user_ids),
            "item_ids": np.asarray(self.item_ids),
            "user/layers": self.users,
            "item/layers": self.items,
        }
        for tower, vectors in (self.compressed or {}).items():
            arrays[f"{tower}/compressed"] = vectors
        write_atomically(path, lambda temporary: np.savez(temporary, **arrays))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        fingerprint: str | None = None,
        split: KARSplit | None = None,
    ) -> LayerVectors | None:
        """Reads vectors saved by `save`, or `None` when they are not current.

        Args:
            path: the `.npz` file.
            fingerprint: when given, the file must have been saved with it.
            split: when given, the file must hold exactly its users and items.

        Returns:
            `LayerVectors`, or `None` when the file is missing or was made by
            another model or for another split.
        """
        path = Path(path)
        if not path.is_file():
            return None
        with np.load(path) as stored:
            if "fingerprint" not in stored.files:
                return None
            if fingerprint is not None and str(stored["fingerprint"]) != fingerprint:
                return None
            user_ids, item_ids = stored["user_ids"], stored["item_ids"]
            if split is not None and (
                user_ids.tolist() != sorted(split.user_texts)
                or item_ids.tolist() != sorted(split.item_texts)
            ):
                return None
            compressed = {
                tower: stored[f"{tower}/compressed"]
                for tower in TOWERS
                if f"{tower}/compressed" in stored.files
            }
            return cls(
                user_ids, stored["user/layers"], item_ids, stored["item/layers"], compressed or None
            )


def _feed_forward(model, vectors, batch_size):
    """Runs a small (B, d) -> (B, k) network over numpy rows, without gradients."""
    inputs = keras.Input((vectors.shape[1],))
    return (
        keras.Model(inputs, model(inputs))
        .predict(vectors, batch_size=batch_size, verbose=0)
        .astype("float32")
    )


class LayerProbe:
    """Encodes texts with every layer of a backbone and scores each layer downstream.

    Draws one point per backbone layer of the MRA curve (DESIGN.md Sec. 5):
    the backbone's `return_all_layers=True` output gives each text's pooled
    embeddings and the pooled output of each of the L blocks; the
    downstream DCNv2 is then trained on each layer's user and item vectors.
    `probe` does both; `encode_split` and `evaluate_layers` are the two
    steps alone, and the encoded vectors can be cached in an `.npz` file.

    Args:
        backbone: a `LoRABackbone` with a tokenizer: a frozen preset
            backbone (`lora_rank=0`) or the `backbone` of a trained `MARC`.
        compression: `None`, or a dict tower -> the trained MARC's
            compression network, to also emit MARC-C vectors from the last
            layer.
        batch_size: texts per forward pass.
        verbose: show progress bars.

    Example:
    >>> probe = LayerProbe(LoRABackbone.from_preset(path, lora_rank=0))
    >>> rows = probe.probe(split, features, DownstreamConfig(seeds=(0, 1, 2)), method="frozen",
    ...                    cache_path="probe/layers-frozen.npz", fingerprint="minilm")
    >>> [(row["layer"], row["auc_mean"]) for row in rows]
    """

    def __init__(
        self,
        backbone: LoRABackbone,
        compression: dict[str, CompressionNetwork] | None = None,
        batch_size: int = 64,
        verbose: int = 1,
    ) -> None:
        if not isinstance(backbone, LoRABackbone):
            raise TypeError(f"LayerProbe needs a LoRABackbone; got {type(backbone).__name__}.")
        self.backbone = backbone
        self.compression = compression
        self.batch_size = int(batch_size)
        self.verbose = verbose
        token_inputs = {
            name: keras.Input((None,), dtype="int32", name=name)
            for name in ("token_ids", "padding_mask")
        }
        # A functional view, so that `predict_on_batch` runs without gradients.
        self._layer_states = keras.Model(
            token_inputs, backbone(token_inputs, return_all_layers=True)["layers"]
        )

    @property
    def num_layers(self) -> int:
        """L + 1: the embeddings and the L blocks."""
        return self.backbone.num_layers + 1

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """Pools every layer for each text, batching texts of similar length.

        Args:
            texts: a sequence of strings.

        Returns:
            A float32 (N, L + 1, d) array; row i is `texts[i]`, entry
            [:, -1] is the backbone's pooled output.
        """
        texts = list(texts)
        layers, dim = self.num_layers, self.backbone.hidden_dim
        if not texts:
            return np.zeros((0, layers, dim), "float32")
        tokens = self.backbone.tokenize(texts)
        progress = keras.utils.Progbar(len(texts), unit_name="text") if self.verbose else None

        def run_batch(batch):
            states = np.asarray(self._layer_states.predict_on_batch(batch))
            return {"layers": states.reshape(len(states), layers * dim)}

        flat = encode_in_length_order(
            tokens,
            {"layers": layers * dim},
            run_batch,
            batch_size=self.batch_size,
            on_batch=progress.add if progress is not None else None,
        )["layers"]
        return flat.reshape(len(texts), layers, dim)

    def encode_split(
        self, split: KARSplit, cache_path: str | os.PathLike | None = None, fingerprint: str = ""
    ) -> LayerVectors:
        """Encodes every user text and item text of a split.

        Args:
            split: a `KARSplit`.
            cache_path: an `.npz` file; vectors already there for the same
                `fingerprint` and the same users and items are reused,
                otherwise the file is (re)written atomically.
            fingerprint: a string naming the model and the data settings
                the texts came from.

        Returns:
            `LayerVectors`, ids sorted.
        """
        if cache_path is not None:
            cached = LayerVectors.load(cache_path, fingerprint, split)
            if cached is not None:
                return cached
        user_ids, item_ids = sorted(split.user_texts), sorted(split.item_texts)
        users = self.encode(split.user_texts[user] for user in user_ids)
        items = self.encode(split.item_texts[item] for item in item_ids)
        compressed = None
        if self.compression is not None:
            compressed = {
                tower: _feed_forward(self.compression[tower], vectors[:, -1], 4 * self.batch_size)
                for tower, vectors in (("user", users), ("item", items))
            }
        vectors = LayerVectors(np.array(user_ids), users, np.array(item_ids), items, compressed)
        if cache_path is not None:
            vectors.save(cache_path, fingerprint)
        return vectors

    def probe(
        self,
        split: KARSplit,
        features: RankingFeatures,
        config: DownstreamConfig | None = None,
        layers: Iterable[int] | None = None,
        method: str = "probe",
        cache_path: str | os.PathLike | None = None,
        fingerprint: str = "",
        log: Callable[[str], object] = print,
    ) -> list[dict]:
        """Encodes a split (see `encode_split`) and scores each layer (see `evaluate_layers`).

        Args:
            split: a `KARSplit`.
            features: its `RankingFeatures`.
            config: a `DownstreamConfig`, `None` for the defaults.
            layers: layer indices to score, `None` for all L + 1.
            method: the name of the curve.
            cache_path: `.npz` cache of the encoded vectors, or `None`.
            fingerprint: names the model and data settings of the cache.
            log: callable taking one progress line.

        Returns:
            One row per scored layer, as `evaluate_layers` returns them.
        """
        check_layers(layers, self.num_layers, method)
        vectors = self.encode_split(split, cache_path, fingerprint)
        return evaluate_layers(
            DownstreamEvaluator(features, config, log=log), vectors, layers, method
        )


def check_layers(layers: Iterable[int] | None, num_layers: int, method: str) -> list[int]:
    """The layer indices to probe: all by default; out-of-range ones are errors."""
    if layers is None:
        return list(range(num_layers))
    layers = [int(layer) for layer in layers]
    wrong = [layer for layer in layers if not 0 <= layer < num_layers]
    if wrong or not layers:
        raise ValueError(
            f"Layers {wrong or '[]'} are not in 0..{num_layers - 1} for '{method}' "
            f"(0 = embeddings, {num_layers - 1} = last block); choose --layers in that range."
        )
    return sorted(set(layers))


def evaluate_layers(
    evaluator: DownstreamEvaluator,
    vectors: LayerVectors,
    layers: Iterable[int] | None = None,
    method: str = "probe",
) -> list[dict]:
    """Trains the downstream DCNv2 on each layer's vectors.

    Args:
        evaluator: a `DownstreamEvaluator` (its features, config and seeds).
        vectors: `LayerVectors` of the evaluator's split.
        layers: layer indices to score, `None` for all L + 1.
        method: the name of the curve (e.g. "frozen" or a run's label).

    Returns:
        One row per layer, in layer order: `method`, `layer` and the fields
        of `DownstreamEvaluator.summary_row` (`auc_mean`, `auc_std`,
        `logloss_mean`, `logloss_std`, per-seed `aucs`, `loglosses`, `seconds`).
    """
    features = evaluator.features
    rows = []
    for layer in check_layers(layers, vectors.num_layers, method):
        tables = (
            features.vector_table(vectors.user_ids, vectors.users[:, layer], "user"),
            features.vector_table(vectors.item_ids, vectors.items[:, layer], "item"),
        )
        (row,) = evaluator.evaluate(
            {f"{method}/layer-{layer}": lambda seed, tables=tables: tables},
            tiers=evaluator.config.tiers[:1],
        )
        rows.append({"method": method, "layer": layer, **row})
    return rows


def evaluate_compressed(evaluator: DownstreamEvaluator, vectors: LayerVectors, method: str) -> dict:
    """The downstream row of a run's MARC-C vectors, placed at its last layer."""
    tables = tuple(
        evaluator.features.vector_table(ids, vectors.compressed[tower], tower)
        for tower, ids in (("user", vectors.user_ids), ("item", vectors.item_ids))
    )
    (row,) = evaluator.evaluate(
        {f"{method}/marc-c": lambda seed: tables}, tiers=evaluator.config.tiers[:1]
    )
    return {"method": method, "layer": vectors.num_layers - 1, **row}
