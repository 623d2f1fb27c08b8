"""The CTR rankers' shared inputs: sparse fields and expert-adapted vectors (DESIGN.md Sec. 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from marc_keras.config.downstream_config import ADAPTOR_HIDDEN_UNITS, EMBEDDING_DIM
from marc_keras.ranking.expert_adaptor import ExpertAdaptor
from marc_keras.ranking.ranking_features import MAX_RATING

if TYPE_CHECKING:
    from marc_keras.config.ranker_tier import RankerTier
    from marc_keras.ranking.ranking_features import RankingFeatures

TOWERS = ("user", "item")


def history_mean(embedding, history):
    """The mean of `embedding` over the real items of `history` (0 = padding): (B, H) -> (B, D)."""
    # Summing every slot and taking back the padding row's share is exact and
    # cheaper on CPU than masking the (B, H, D) gather.
    embedded = embedding(history)  # (B, H, D)
    real = ops.sum(ops.cast(history > 0, embedded.dtype), axis=-1, keepdims=True)  # (B, 1)
    padding = ops.cast(ops.shape(history)[-1], embedded.dtype) - real
    padding_row = ops.cast(embedding.embeddings[0], embedded.dtype)
    total = ops.sum(embedded, axis=-2) - padding * padding_row
    return total / ops.maximum(real, 1.0)


class FieldRanker(keras.Model):
    """Base of every CTR ranker: builds the fields, leaves their interaction to a subclass.

    Fields, each `embedding_dim` wide: target item id, target item genres,
    behaviour history items (masked mean), history genres and history
    ratings, each categorical user column, and, when configured, the
    external user and item vectors through an `ExpertAdaptor` each (KAR's
    and MARC's way of feeding LLM vectors to any CTR model, MARC Sec. 4.1.3).
    Which fields exist is the `RankerTier`'s choice, made when
    `RankingFeatures.tier_inputs` builds the inputs. A subclass implements
    `interact(inputs, fields, training) -> (B, 1) logits` and adds its own
    arguments to `get_config`; `marc_keras.ranking.ranker_registry` names them.

    Genres and ratings enter as weights over their vocabulary (an item's
    genre shares; the history's genre and rating shares, computed once in
    numpy), times a (vocabulary, D) matrix: the same mean of embeddings as
    a lookup per history item and genre, at a fraction of the cost. The
    item-genre table and the vector tables are non-trainable weights, so
    samples carry only indices and shares.

    Args:
        num_users: user vocabulary size (index 0 = unknown).
        num_items: item vocabulary size (index 0 = padding).
        num_genres: genre vocabulary size (index 0 = padding).
        num_ratings: number of rating values (1..num_ratings).
        user_field_sizes: vocabulary size of each categorical user column.
        user_vector_dim: width of external user vectors, or `None`.
        item_vector_dim: width of external item vectors, or `None`.
        num_experts: experts per adaptor.
        embedding_dim: field width.
        adaptor_input_dropout: dropout on each external vector (training only).
        adaptor_expert_dropout: dropout inside each adaptor's experts.
        adaptor_input_noise: Gaussian noise on each external vector, as a
            multiple of its per-dimension std over training users (items);
            `from_features` sets that std.
        adaptor_weight_decay: L2 penalty on the adaptors' kernels, apart
            from the optimizer's weight decay of the whole ranker.
        user_adaptor_dim: width of the user vector's field (a bottleneck),
            or `None` for `embedding_dim`. Only rankers that flatten their
            fields take another width (`uniform_fields = False`).
        **kwargs: base model arguments.

    Returns:
        Called on the dict of `RankingFeatures` inputs, (B, 1) logits.

    Example:
    >>> ranker = DeepFMRanker.from_features(features, tier, user_vectors=table_u)
    >>> ranker.compile(optimizer="adamw", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    """

    # Rankers that stack their fields into (B, F, D) need every field D wide.
    uniform_fields = True

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_genres: int,
        num_ratings: int,
        user_field_sizes: Sequence[int],
        user_vector_dim: int | None = None,
        item_vector_dim: int | None = None,
        num_experts: int = 3,
        embedding_dim: int = EMBEDDING_DIM,
        adaptor_input_dropout: float = 0.0,
        adaptor_expert_dropout: float = 0.0,
        adaptor_input_noise: float = 0.0,
        adaptor_weight_decay: float = 0.0,
        user_adaptor_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.num_genres, self.num_ratings = int(num_genres), int(num_ratings)
        self.user_field_sizes = [int(size) for size in user_field_sizes]
        self.vector_dims = {"user": user_vector_dim, "item": item_vector_dim}
        self.num_experts = int(num_experts)
        self.embedding_dim = int(embedding_dim)
        self.adaptor_settings = {
            "input_dropout": float(adaptor_input_dropout),
            "expert_dropout": float(adaptor_expert_dropout),
            "input_noise": float(adaptor_input_noise),
            "weight_decay": float(adaptor_weight_decay),
        }
        self.user_adaptor_dim = None if user_adaptor_dim is None else int(user_adaptor_dim)
        if (
            self.uniform_fields
            and self.user_adaptor_dim not in (None, self.embedding_dim)
            and user_vector_dim is not None
        ):
            raise ValueError(
                f"{type(self).__name__} stacks its fields, so every field is embedding_dim="
                f"{self.embedding_dim} wide; got user_adaptor_dim={self.user_adaptor_dim}. "
                "Leave the adaptor's user_dim unset for this ranker."
            )
        self.item_genre_shares = self.add_weight(
            shape=(self.num_items, self.num_genres),
            initializer="zeros",
            trainable=False,
            name="item_genre_shares",
        )
        self.item_embedding = keras.layers.Embedding(
            self.num_items, embedding_dim, name="item_embedding"
        )
        # Dense layers without bias over shares = embedding tables.
        self.genre_embedding = keras.layers.Dense(
            embedding_dim, use_bias=False, name="genre_embedding"
        )
        self.rating_embedding = keras.layers.Dense(
            embedding_dim, use_bias=False, name="rating_embedding"
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
            width = self.user_adaptor_dim if tower == "user" else None
            self.adaptors[tower] = ExpertAdaptor(
                num_experts,
                hidden_units=ADAPTOR_HIDDEN_UNITS,
                output_dim=width or embedding_dim,
                name=f"{tower}_adaptor",
                **self.adaptor_settings,
            )

    @property
    def num_fields(self) -> int:
        """How many fields `fields` returns: five item and history fields, user columns, vectors."""
        return 5 + len(self.user_field_sizes) + len(self.vector_tables)

    @classmethod
    def from_features(
        cls,
        features: RankingFeatures,
        tier: RankerTier,
        user_vectors: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
        **kwargs: Any,
    ) -> FieldRanker:
        """A ranker sized for `features` in a tier, with its tables filled.

        Args:
            features: a `RankingFeatures`.
            tier: a `RankerTier` (its inputs: `features.tier_inputs(tier)`).
            user_vectors: optional table from `features.vector_table(..., "user")`.
            item_vectors: optional table from `features.vector_table(..., "item")`.
            **kwargs: other constructor arguments.
        """
        genre_shares = features.item_genre_shares(tier)
        ranker = cls(
            num_users=len(features.user_vocabulary) + 1,
            num_items=genre_shares.shape[0],
            num_genres=genre_shares.shape[1],
            num_ratings=MAX_RATING,
            user_field_sizes=features.user_field_sizes if tier.user_fields else [],
            user_vector_dim=None if user_vectors is None else int(user_vectors.shape[1]),
            item_vector_dim=None if item_vectors is None else int(item_vectors.shape[1]),
            **kwargs,
        )
        ranker.item_genre_shares.assign(genre_shares)
        training_inputs = features.tier_inputs(tier)["train"]
        for tower, table in (("user", user_vectors), ("item", item_vectors)):
            if table is not None:
                table = np.asarray(table, "float32")
                ranker.vector_tables[tower].assign(table)
                # The noise scale comes from training rows only, as the centering does.
                ranker.adaptors[tower].adapt(table[np.unique(training_inputs[tower])])
        return ranker

    def fields(self, inputs, training=None) -> list:
        """The ranker's fields, each (B, D), in a fixed order (vectors last)."""
        item, history = inputs["item"], inputs["history_items"]  # (B,), (B, H)
        fields = [
            self.item_embedding(item),
            self.genre_embedding(ops.take(self.item_genre_shares, item, axis=0)),  # (B, V)
            history_mean(self.item_embedding, history),
            self.genre_embedding(inputs["history_genres"]),  # (B, V) shares
            self.rating_embedding(inputs["history_ratings"]),  # (B, R) shares
        ]
        for index, embedding in enumerate(self.user_field_embeddings):
            fields.append(embedding(inputs["user_fields"][:, index]))
        for tower, table in self.vector_tables.items():
            vectors = ops.take(table, inputs[tower], axis=0)  # (B, d)
            fields.append(self.adaptors[tower](vectors, training=training))
        return fields

    def interact(self, inputs, fields, training=None):
        """(B, 1) logits from the fields; the part each ranker defines."""
        raise NotImplementedError(f"{type(self).__name__} must implement interact().")

    def call(self, inputs, training=None):
        return self.interact(inputs, self.fields(inputs, training=training), training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_users": self.num_users,
            "num_items": self.num_items,
            "num_genres": self.num_genres,
            "num_ratings": self.num_ratings,
            "user_field_sizes": self.user_field_sizes,
            "user_vector_dim": self.vector_dims["user"],
            "item_vector_dim": self.vector_dims["item"],
            "num_experts": self.num_experts,
            "embedding_dim": self.embedding_dim,
            **{f"adaptor_{name}": value for name, value in self.adaptor_settings.items()},
            "user_adaptor_dim": self.user_adaptor_dim,
        }
