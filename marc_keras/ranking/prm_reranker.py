"""PRM, the re-ranker of MARC's re-ranking table (paper Sec. 4.2.2, Table 3), in Keras 3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from marc_keras.layers.item_id_index import ItemIdIndex
from marc_keras.ranking.expert_adaptor import ExpertAdaptor, check_vector_tables

EMBEDDING_DIM = 32
HIDDEN_UNITS = (200, 80)
ADAPTOR_HIDDEN_UNITS = (128,)


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
    """KAR's PRM position table (`RS/models.py`, `get_pos_embedding`): (length, width).

    Row p, column j is p / 10000^(2 (j // 2) / width), with sin on even and
    cos on odd columns; row 0 is all zeros (KAR leaves the first position
    without an encoding).
    """
    positions = np.arange(length, dtype="float64")[:, None]
    exponents = 2 * (np.arange(width) // 2) / width
    table = positions / np.power(10000.0, exponents)[None, :]
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    table[0] = 0.0
    return table.astype("float32")


@keras.saving.register_keras_serializable(package="marc_keras")
class PRMReranker(keras.Model):
    """Personalized re-ranking (Pei et al., 2019) as KAR configures it for MARC's Table 3.

    Each candidate of a list becomes the concatenation of its item id
    embedding, its genre embedding (a bias-free Dense over the item's genre
    shares, as `DCNv2Ranker`) and, when vector tables are given, an
    `ExpertAdaptor` field of [user vector, item vector] (KAR's augmented
    input); a sinusoidal position table is added (`sinusoidal_positions`),
    one multi-head self-attention runs over the list, and an MLP over
    [attention output, input] gives each candidate a click probability.
    Trained with BCE on the candidates' labels (KAR's `get_rerank_output`).

    Args:
        num_items: item index vocabulary (index 0 = padding / unknown).
        num_genres: genre vocabulary size.
        list_length: candidates per list.
        user_vector_dim: width of the user vector table, or `None`.
        item_vector_dim: width of the item vector table, or `None` (both or
            neither).
        num_users: rows of the user vector table (with vectors).
        embedding_dim: width of each field.
        num_heads: attention heads (KAR: 2).
        hidden_units: the MLP (KAR: [200, 80]).
        dropout: dropout after each MLP layer and on the attention weights.
        num_experts: experts of the vector adaptor.
        item_id_dropout: in training, the share of candidates whose id
            embedding is the shared out-of-vocabulary one (`ItemIdIndex`).
        **kwargs: base model arguments.

    Returns:
        Called on {"user": (L,) user index, "items": (L, n) item indices},
        (L, n) click probabilities.

    Example:
    >>> reranker = PRMReranker(num_items=3884, num_genres=19, list_length=10)
    >>> reranker({"user": np.zeros(2, "int32"), "items": np.ones((2, 10), "int32")}).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        num_items: int,
        num_genres: int,
        list_length: int = 10,
        user_vector_dim: int | None = None,
        item_vector_dim: int | None = None,
        num_users: int | None = None,
        embedding_dim: int = EMBEDDING_DIM,
        num_heads: int = 2,
        hidden_units: Sequence[int] = HIDDEN_UNITS,
        dropout: float = 0.0,
        num_experts: int = 3,
        item_id_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_vector_tables(
            "PRMReranker (KAR's augmented input)", user_vector_dim, item_vector_dim, num_users
        )
        self.num_items, self.num_genres = int(num_items), int(num_genres)
        self.list_length = int(list_length)
        self.user_vector_dim = None if user_vector_dim is None else int(user_vector_dim)
        self.item_vector_dim = None if item_vector_dim is None else int(item_vector_dim)
        self.num_users = None if num_users is None else int(num_users)
        self.embedding_dim = int(embedding_dim)
        self.num_heads = int(num_heads)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.dropout = float(dropout)
        self.num_experts = int(num_experts)
        fields = 3 if self.user_vector_dim else 2
        self.input_dim = fields * self.embedding_dim
        if self.input_dim % self.num_heads:
            raise ValueError(
                f"The candidate width {self.input_dim} must divide into num_heads={num_heads}."
            )
        self.item_genre_shares = self.add_weight(
            shape=(self.num_items, self.num_genres),
            initializer="zeros",
            trainable=False,
            name="item_genre_shares",
        )
        self.item_id_index = ItemIdIndex(
            self.num_items, item_id_dropout=item_id_dropout, name="item_id_index"
        )
        self.item_embedding = keras.layers.Embedding(
            self.num_items, self.embedding_dim, name="item_embedding"
        )
        self.genre_embedding = keras.layers.Dense(
            self.embedding_dim, use_bias=False, name="genre_embedding"
        )
        self.vector_tables = {}
        self.adaptor = None
        if self.user_vector_dim:
            for tower, rows, width in (
                ("user", self.num_users, self.user_vector_dim),
                ("item", self.num_items, self.item_vector_dim),
            ):
                self.vector_tables[tower] = self.add_weight(
                    shape=(rows, width),
                    initializer="zeros",
                    trainable=False,
                    name=f"{tower}_vector_table",
                )
            self.adaptor = ExpertAdaptor(
                self.num_experts,
                hidden_units=ADAPTOR_HIDDEN_UNITS,
                output_dim=self.embedding_dim,
                name="vector_adaptor",
            )
        self.positions = ops.convert_to_tensor(
            sinusoidal_positions(self.list_length, self.input_dim)
        )
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads,
            self.input_dim // self.num_heads,
            dropout=self.dropout,
            name="attention",
        )
        self.mlp = []
        for index, units in enumerate(self.hidden_units):
            self.mlp.append(keras.layers.Dense(units, activation="relu", name=f"mlp_{index}"))
            if self.dropout:
                self.mlp.append(keras.layers.Dropout(self.dropout, name=f"mlp_dropout_{index}"))
        self.score = keras.layers.Dense(1, activation="sigmoid", name="score")
        self.build()

    def build(self, input_shape=None) -> None:
        # Every shape follows from the configuration; the inputs' is not needed.
        candidates = (None, self.list_length, self.input_dim)
        self.item_embedding.build((None, self.list_length))
        self.genre_embedding.build((None, self.list_length, self.num_genres))
        if self.adaptor is not None:
            self.adaptor.build((None, self.user_vector_dim + self.item_vector_dim))
        self.attention.build(candidates, candidates)
        width = 2 * self.input_dim
        for layer in self.mlp:
            layer.build((None, self.list_length, width))
            width = getattr(layer, "units", width)
        self.score.build((None, self.list_length, width))
        self.built = True

    def set_tables(
        self,
        item_genre_shares: np.ndarray,
        user_vectors: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
        cold_items: np.ndarray | None = None,
    ) -> None:
        """Fills the non-trainable tables (row i = item index i, row u = user index u).

        `cold_items` (item indices) share the id embedding of row 0, the
        out-of-vocabulary id: only their genres and vectors tell them apart.
        """
        self.item_genre_shares.assign(np.asarray(item_genre_shares, "float32"))
        self.item_id_index.set_cold(cold_items)
        for tower, table in (("user", user_vectors), ("item", item_vectors)):
            if table is not None:
                self.vector_tables[tower].assign(np.asarray(table, "float32"))

    def candidates(self, inputs, training=None):
        """The (L, n, F) candidate inputs, position table added."""
        items = ops.cast(inputs["items"], "int32")  # (L, n)
        parts = [
            self.item_embedding(self.item_id_index(items, training=training)),  # (L, n, E)
            self.genre_embedding(ops.take(self.item_genre_shares, items, axis=0)),  # (L, n, E)
        ]
        if self.adaptor is not None:
            user = ops.take(self.vector_tables["user"], ops.cast(inputs["user"], "int32"), axis=0)
            lists = items.shape[0]
            if lists is not None and lists * self.list_length > self.num_items:
                # More candidates than catalogue items: project the item table once.
                field = self.adaptor.call_shared(
                    user, self.vector_tables["item"], training=training, row_indices=items
                )
            else:
                item = ops.take(self.vector_tables["item"], items, axis=0)  # (L, n, d_i)
                field = self.adaptor.call_shared(user, item, training=training)
            parts.append(field)  # (L, n, E)
        return ops.concatenate(parts, axis=-1) + self.positions[None]

    def call(self, inputs, training=None):
        x = self.candidates(inputs, training=training)  # (L, n, F)
        attended = self.attention(x, x, training=training)  # (L, n, F)
        hidden = ops.concatenate([attended, x], axis=-1)  # (L, n, 2F)
        for layer in self.mlp:
            hidden = layer(hidden, training=training)
        return self.score(hidden)[..., 0]  # (L, n)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "num_genres": self.num_genres,
            "list_length": self.list_length,
            "user_vector_dim": self.user_vector_dim,
            "item_vector_dim": self.item_vector_dim,
            "num_users": self.num_users,
            "embedding_dim": self.embedding_dim,
            "num_heads": self.num_heads,
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "num_experts": self.num_experts,
            "item_id_dropout": self.item_id_index.item_id_dropout,
        }
