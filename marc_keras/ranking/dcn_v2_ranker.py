"""DCNv2 CTR ranker with optional external user/item vectors (DESIGN.md Sec. 4)."""

import keras
import keras_rs
import numpy as np
from keras import ops

from marc_keras.ranking.expert_adaptor import ExpertAdaptor
from marc_keras.ranking.ranking_features import MAX_RATING

TOWERS = ("user", "item")


def _masked_mean(embedded, mask):
    # embedded (B, L, D), mask (B, L) of 0/1 -> (B, D)
    mask = ops.cast(mask, embedded.dtype)[..., None]
    return ops.sum(embedded * mask, axis=-2) / ops.maximum(ops.sum(mask, axis=-2), 1.0)


@keras.saving.register_keras_serializable(package="marc_keras")
class DCNv2Ranker(keras.Model):
    """The downstream ranker of the KAR / MARC protocol: DCNv2 over sparse fields.

    Fields, each 32-d: target item id, target item genres (mean), behaviour
    history items, history genres and history ratings (masked means), each
    categorical user column, and, when configured, the external user and
    item vectors through an `ExpertAdaptor` each. Three full-matrix
    `keras_rs.layers.FeatureCross` layers, then a deep tower [200, 80] and
    one logit (stacked DCNv2). The genre table and the vector tables are
    non-trainable weights, so samples carry only indices.

    Args:
        num_users: user vocabulary size (index 0 = unknown).
        num_items: item vocabulary size (index 0 = padding).
        genres_per_item: width of the genre table.
        num_genres: genre vocabulary size (index 0 = padding).
        user_field_sizes: vocabulary size of each categorical user column.
        user_vector_dim: width of external user vectors, or `None`.
        item_vector_dim: width of external item vectors, or `None`.
        num_experts: experts per adaptor.
        embedding_dim: field width.
        cross_layers: number of FeatureCross layers.
        deep_units: sizes of the deep tower.
        **kwargs: base model arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = DCNv2Ranker.from_features(features, user_vectors=table_u, item_vectors=table_i)
    >>> ranker.compile(optimizer="adamw", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    """

    def __init__(
        self,
        num_users,
        num_items,
        genres_per_item,
        num_genres,
        user_field_sizes,
        user_vector_dim=None,
        item_vector_dim=None,
        num_experts=3,
        embedding_dim=32,
        cross_layers=3,
        deep_units=(200, 80),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.genres_per_item, self.num_genres = int(genres_per_item), int(num_genres)
        self.user_field_sizes = [int(size) for size in user_field_sizes]
        self.vector_dims = {"user": user_vector_dim, "item": item_vector_dim}
        self.num_experts = int(num_experts)
        self.embedding_dim = int(embedding_dim)
        self.cross_layers = int(cross_layers)
        self.deep_units = tuple(int(units) for units in deep_units)
        self.genre_table = self.add_weight(
            shape=(self.num_items, self.genres_per_item),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="genre_table",
        )
        self.item_embedding = keras.layers.Embedding(
            self.num_items, embedding_dim, name="item_embedding"
        )
        self.genre_embedding = keras.layers.Embedding(
            self.num_genres, embedding_dim, name="genre_embedding"
        )
        self.rating_embedding = keras.layers.Embedding(
            MAX_RATING + 1, embedding_dim, name="rating_embedding"
        )
        self.user_field_embeddings = [
            keras.layers.Embedding(size, embedding_dim, name=f"user_field_{index}")
            for index, size in enumerate(self.user_field_sizes)
        ]
        self.vector_tables, self.adaptors = {}, {}
        for tower in TOWERS:
            if self.vector_dims[tower] is None:
                continue
            rows = self.num_users if tower == "user" else self.num_items
            self.vector_tables[tower] = self.add_weight(
                shape=(rows, int(self.vector_dims[tower])),
                initializer="zeros",
                trainable=False,
                name=f"{tower}_vector_table",
            )
            self.adaptors[tower] = ExpertAdaptor(
                num_experts, output_dim=embedding_dim, name=f"{tower}_adaptor"
            )
        self.crosses = [
            keras_rs.layers.FeatureCross(name=f"cross_{index}")
            for index in range(self.cross_layers)
        ]
        self.deep = [
            keras.layers.Dense(units, activation="relu", name=f"deep_{index}")
            for index, units in enumerate(self.deep_units)
        ]
        self.logit = keras.layers.Dense(1, name="logit")

    @classmethod
    def from_features(cls, features, user_vectors=None, item_vectors=None, **kwargs):
        """A ranker sized for `features`, with its tables filled.

        Args:
            features: a `RankingFeatures`.
            user_vectors: optional table from `features.vector_table(..., "user")`.
            item_vectors: optional table from `features.vector_table(..., "item")`.
            **kwargs: other constructor arguments.
        """
        ranker = cls(
            num_users=len(features.user_vocabulary) + 1,
            num_items=features.item_genres.shape[0],
            genres_per_item=features.item_genres.shape[1],
            num_genres=len(getattr(features, "genre_vocabulary", {})) + 1,
            user_field_sizes=features.user_field_sizes,
            user_vector_dim=None if user_vectors is None else int(user_vectors.shape[1]),
            item_vector_dim=None if item_vectors is None else int(item_vectors.shape[1]),
            **kwargs,
        )
        ranker.genre_table.assign(features.item_genres)
        for tower, table in (("user", user_vectors), ("item", item_vectors)):
            if table is not None:
                ranker.vector_tables[tower].assign(np.asarray(table, "float32"))
        return ranker

    def _genre_field(self, items):
        genres = ops.take(self.genre_table, items, axis=0)  # (..., G)
        return _masked_mean(self.genre_embedding(genres), genres > 0)

    def call(self, inputs, training=None):
        item, history = inputs["item"], inputs["history_items"]  # (B,), (B, H)
        history_mask = history > 0
        fields = [
            self.item_embedding(item),
            self._genre_field(item),
            _masked_mean(self.item_embedding(history), history_mask),
            _masked_mean(self.rating_embedding(inputs["history_ratings"]), history_mask),
        ]
        history_genres = ops.take(self.genre_table, history, axis=0)  # (B, H, G)
        genre_means = _masked_mean(
            self.genre_embedding(history_genres), history_genres > 0
        )  # (B, H, D)
        fields.append(_masked_mean(genre_means, history_mask))
        for index, embedding in enumerate(self.user_field_embeddings):
            fields.append(embedding(inputs["user_fields"][:, index]))
        for tower, table in self.vector_tables.items():
            fields.append(self.adaptors[tower](ops.take(table, inputs[tower], axis=0)))
        x0 = ops.concatenate(fields, axis=-1)  # (B, fields * D)
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        for layer in self.deep:
            x = layer(x)
        return self.logit(x)

    def get_config(self):
        return {
            **super().get_config(),
            "num_users": self.num_users,
            "num_items": self.num_items,
            "genres_per_item": self.genres_per_item,
            "num_genres": self.num_genres,
            "user_field_sizes": self.user_field_sizes,
            "user_vector_dim": self.vector_dims["user"],
            "item_vector_dim": self.vector_dims["item"],
            "num_experts": self.num_experts,
            "embedding_dim": self.embedding_dim,
            "cross_layers": self.cross_layers,
            "deep_units": list(self.deep_units),
        }
