"""The two-tower (DSSM) retriever of MARC's retrieval table (paper Sec. 4.2.2, Table 2), Keras 3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import keras_rs
import numpy as np
from keras import ops

from marc_keras.layers.item_id_index import ItemIdIndex
from marc_keras.layers.mlp_stack import build_dense_stack
from marc_keras.ranking.field_ranker import history_mean
from marc_keras.ranking.expert_adaptor import ExpertAdaptor, check_vector_tables

EMBEDDING_DIM = 32
TOWER_UNITS = (64,)
OUTPUT_DIM = 32
TEMPERATURE = 0.05
ADAPTOR_HIDDEN_UNITS = (128,)
# Added to the logit of an in-batch negative that is the row's own positive
# item: far below any cosine / temperature, and finite so softmax stays exact.
ACCIDENTAL_HIT_LOGIT = -1e9
TOWERS = ("user", "item")


@keras.saving.register_keras_serializable(package="marc_keras")
class TwoTowerRetriever(keras.Model):
    """A query tower and an item tower scored by a dot product, trained with in-batch softmax.

    Query tower: the mean id embedding of the query's history items and, with
    vector tables, the user vector through an `ExpertAdaptor`; concatenated,
    an MLP, L2-normalised. Item tower: the item's id embedding (shared with
    the history), its genre embedding (a bias-free Dense over the genre
    shares, as `DCNv2Ranker`) and, with vector tables, the item vector
    through an `ExpertAdaptor`; the same shape of MLP, L2-normalised.

    Training follows TFRS' `tasks.Retrieval` (Yi et al. 2019): for a batch of
    (query, positive item) pairs the logits are cosine / `temperature` of
    every query against every batch item, minus the log of each item's
    sampling probability (`keras_rs.layers.SamplingProbabilityCorrection`,
    the logQ correction), with another row's copy of the row's own positive
    masked out, and softmax cross-entropy against the diagonal. The mask is
    written here because `keras_rs.layers.RemoveAccidentalHits` of keras-rs
    0.4.0 adds about 1e-40 to those logits and so removes nothing
    (keras-team/keras-rs pull request 206).

    Cold items: an `ItemIdIndex` maps an item index to its id-embedding row;
    `set_tables` points cold items at row 0, one shared out-of-vocabulary
    embedding, so only their genres and vectors tell them apart.

    Args:
        num_items: item index vocabulary (index 0 = padding / unknown).
        num_genres: genre vocabulary size (columns of the genre shares).
        history_length: history items per query.
        user_vector_dim: width of the user vector table, or `None`.
        item_vector_dim: width of the item vector table, or `None` (both or
            neither).
        num_users: rows of the user vector table (with vectors).
        embedding_dim: width of the id, genre and adaptor fields.
        tower_units: hidden layers of each tower's MLP.
        output_dim: width of the retrieval embedding.
        temperature: softmax temperature of the cosine logits.
        item_id_dropout: in training, the share of items, target and
            history alike, whose id embedding is the shared out-of-vocabulary
            one (`ItemIdIndex`; dropped history items leave the mean), so the
            towers learn to place an item from its genres and vector alone,
            as they must for cold items.
        num_experts: experts per vector adaptor.
        adaptor_input_dropout, adaptor_expert_dropout, adaptor_input_noise,
        adaptor_weight_decay: the adaptors' regularisation (`AdaptorSetting`).
        **kwargs: base model arguments.

    Returns:
        Called on {"user": (B,) user index, "history": (B, H) item indices,
        "item": (B,) positive item indices}, the (B, B) corrected logits.

    Example:
    >>> retriever = TwoTowerRetriever(num_items=3884, num_genres=19, history_length=15)
    >>> retriever.set_tables(genre_shares, item_probability=np.full(3884, 1 / 3883))
    >>> retriever.fit({"user": users, "history": histories, "item": items}, batch_size=1024)
    >>> scores = retriever.encode_queries(queries) @ retriever.encode_items(candidates).T
    """

    def __init__(
        self,
        num_items: int,
        num_genres: int,
        history_length: int,
        user_vector_dim: int | None = None,
        item_vector_dim: int | None = None,
        num_users: int | None = None,
        embedding_dim: int = EMBEDDING_DIM,
        tower_units: Sequence[int] = TOWER_UNITS,
        output_dim: int = OUTPUT_DIM,
        temperature: float = TEMPERATURE,
        item_id_dropout: float = 0.0,
        num_experts: int = 3,
        adaptor_input_dropout: float = 0.0,
        adaptor_expert_dropout: float = 0.0,
        adaptor_input_noise: float = 0.0,
        adaptor_weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_vector_tables("TwoTowerRetriever", user_vector_dim, item_vector_dim, num_users)
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive; got {temperature}.")
        self.num_items, self.num_genres = int(num_items), int(num_genres)
        self.history_length = int(history_length)
        self.vector_dims = {
            "user": None if user_vector_dim is None else int(user_vector_dim),
            "item": None if item_vector_dim is None else int(item_vector_dim),
        }
        self.num_users = None if num_users is None else int(num_users)
        self.embedding_dim = int(embedding_dim)
        self.tower_units = tuple(int(units) for units in tower_units)
        self.output_dim = int(output_dim)
        self.temperature = float(temperature)
        self.num_experts = int(num_experts)
        self.adaptor_settings = {
            "input_dropout": float(adaptor_input_dropout),
            "expert_dropout": float(adaptor_expert_dropout),
            "input_noise": float(adaptor_input_noise),
            "weight_decay": float(adaptor_weight_decay),
        }
        self.item_genre_shares = self.add_weight(
            shape=(self.num_items, self.num_genres),
            initializer="zeros",
            trainable=False,
            name="item_genre_shares",
        )
        self.item_id_index = ItemIdIndex(
            self.num_items, item_id_dropout=item_id_dropout, name="item_id_index"
        )
        self.item_probability = self.add_weight(
            shape=(self.num_items,),
            initializer="ones",
            trainable=False,
            name="item_probability",
        )
        self.item_embedding = keras.layers.Embedding(
            self.num_items, self.embedding_dim, name="item_embedding"
        )
        self.genre_embedding = keras.layers.Dense(
            self.embedding_dim, use_bias=False, name="genre_embedding"
        )
        self.vector_tables, self.adaptors = {}, {}
        if self.vector_dims["user"] is not None:
            for tower in TOWERS:
                rows = self.num_users if tower == "user" else self.num_items
                self.vector_tables[tower] = self.add_weight(
                    shape=(rows, self.vector_dims[tower]),
                    initializer="zeros",
                    trainable=False,
                    name=f"{tower}_vector_table",
                )
                self.adaptors[tower] = ExpertAdaptor(
                    self.num_experts,
                    hidden_units=ADAPTOR_HIDDEN_UNITS,
                    output_dim=self.embedding_dim,
                    name=f"{tower}_adaptor",
                    **self.adaptor_settings,
                )
        self.towers = {
            tower: build_dense_stack(
                self.tower_units, self.output_dim, "relu", 0.0, name=f"{tower}_tower"
            )
            for tower in TOWERS
        }
        self.sampling_correction = keras_rs.layers.SamplingProbabilityCorrection()
        self.build()

    def build(self, input_shape=None) -> None:
        # Every shape follows from the configuration; the inputs' is not needed.
        self.item_embedding.build((None,))
        self.genre_embedding.build((None, self.num_genres))
        for tower, adaptor in self.adaptors.items():
            adaptor.build((None, self.vector_dims[tower]))
        fields = {"user": 1, "item": 2}
        for tower, layers in self.towers.items():
            width = (fields[tower] + (tower in self.adaptors)) * self.embedding_dim
            for layer in layers:
                layer.build((None, width))
                width = layer.units
        self.built = True

    def set_tables(
        self,
        item_genre_shares: np.ndarray,
        item_probability: np.ndarray,
        user_vectors: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
        cold_items: np.ndarray | None = None,
        training_users: np.ndarray | None = None,
    ) -> None:
        """Fills the non-trainable tables (row i = item index i, row u = user index u).

        Args:
            item_genre_shares: (items, genres) genre shares.
            item_probability: (items,) each item's share of the training
                pairs (the logQ correction; the keras-rs layer clips zeros).
            user_vectors, item_vectors: the vector tables, or `None`.
            cold_items: item indices without an id embedding of their own.
            training_users: user indices whose vectors set the adaptors' noise scale.
        """
        self.item_genre_shares.assign(np.asarray(item_genre_shares, "float32"))
        self.item_probability.assign(np.asarray(item_probability, "float32"))
        self.item_id_index.set_cold(cold_items)
        for tower, table in (("user", user_vectors), ("item", item_vectors)):
            if table is None:
                continue
            table = np.asarray(table, "float32")
            self.vector_tables[tower].assign(table)
            rows = training_users if tower == "user" and training_users is not None else None
            self.adaptors[tower].adapt(table if rows is None else table[rows])

    def encode_queries(self, inputs, training=None):
        """(B,) users and (B, H) histories -> (B, output_dim) unit query vectors."""
        # Cold items (and, in training, dropped ids) land on row 0, which
        # `history_mean` skips: a query must also do without some of its ids.
        history = self.item_id_index(inputs["history"], training=training)  # (B, H)
        fields = [history_mean(self.item_embedding, history)]  # (B, E)
        if "user" in self.adaptors:
            vectors = ops.take(self.vector_tables["user"], ops.cast(inputs["user"], "int32"), 0)
            fields.append(self.adaptors["user"](vectors, training=training))
        return self._tower("user", ops.concatenate(fields, axis=-1), training)

    def encode_items(self, items, training=None):
        """(N,) item indices -> (N, output_dim) unit item vectors."""
        items = ops.cast(items, "int32")
        fields = [
            self.item_embedding(self.item_id_index(items, training=training)),  # (N, E)
            self.genre_embedding(ops.take(self.item_genre_shares, items, axis=0)),  # (N, E)
        ]
        if "item" in self.adaptors:
            vectors = ops.take(self.vector_tables["item"], items, axis=0)
            fields.append(self.adaptors["item"](vectors, training=training))
        return self._tower("item", ops.concatenate(fields, axis=-1), training)

    def _tower(self, tower, x, training):
        for layer in self.towers[tower]:
            x = layer(x, training=training)
        return x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)

    def call(self, inputs, training=None):
        queries = self.encode_queries(inputs, training=training)  # (B, O)
        items = ops.cast(inputs["item"], "int32")  # (B,)
        logits = ops.matmul(queries, ops.transpose(self.encode_items(items, training)))
        logits = logits / self.temperature  # (B, B)
        probability = ops.take(self.item_probability, items, axis=0)  # (B,)
        logits = self.sampling_correction(logits, probability[None, :])
        rows = ops.arange(ops.shape(items)[0])
        accidental = ops.logical_and(
            ops.equal(items[:, None], items[None, :]), ops.not_equal(rows[:, None], rows[None, :])
        )
        return ops.where(accidental, logits + ACCIDENTAL_HIT_LOGIT, logits)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Row i's positive is column i: in-batch softmax against the diagonal.
        labels = ops.arange(ops.shape(y_pred)[0])
        loss = ops.mean(
            keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        )
        for extra in self.losses:
            loss = loss + extra
        return loss

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "num_genres": self.num_genres,
            "history_length": self.history_length,
            "user_vector_dim": self.vector_dims["user"],
            "item_vector_dim": self.vector_dims["item"],
            "num_users": self.num_users,
            "embedding_dim": self.embedding_dim,
            "tower_units": list(self.tower_units),
            "output_dim": self.output_dim,
            "temperature": self.temperature,
            "item_id_dropout": self.item_id_index.item_id_dropout,
            "num_experts": self.num_experts,
            **{f"adaptor_{name}": value for name, value in self.adaptor_settings.items()},
        }
