"""Sparse features of the downstream CTR ranker, as integer numpy arrays (DESIGN.md Sec. 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from marc_keras.ranking.vector_centering import center

if TYPE_CHECKING:
    from marc_keras.config.ranker_tier import RankerTier
    from marc_keras.data.interaction_data import InteractionData
    from marc_keras.data.kar_split import KARSplit

SPLITS = ("train", "validation", "test")
# User columns with more distinct values than this (zip codes, free text) are
# not categorical features.
MAX_USER_FIELD_VALUES = 1000
MAX_RATING = 5
# Rows per numpy chunk when pooling history shares: (rows, H, genres) floats.
SHARE_CHUNK_ROWS = 32768


def _vocabulary(values):
    """Sorted distinct values -> index from 1; 0 stays free for padding/unknown."""
    return {value: index for index, value in enumerate(sorted(set(values)), start=1)}


def _lookup(vocabulary, values):
    return np.fromiter(
        (vocabulary.get(value, 0) for value in values), dtype="int32", count=len(values)
    )


def training_rows(available: int, train_samples: int | None, seed: int) -> np.ndarray:
    """Indices of the training samples a ranker seed trains on, for both ranking engines.

    `DownstreamEvaluator.train_rows` (Keras) and `TFRSRanker` both draw here.

    Args:
        available: number of training samples.
        train_samples: `DownstreamConfig.train_samples`, `None` for all.
        seed: the ranker seed; the subsample is drawn from it alone, anew per
            seed and the same for every row and engine of that seed.

    Returns:
        A sorted int array: all indices, or `train_samples` of them.
    """
    if train_samples is None or train_samples >= available:
        return np.arange(available)
    return np.sort(np.random.default_rng(seed).choice(available, train_samples, replace=False))


class RankingFeatures:
    """Turns a `KARSplit` into the ranker's inputs, with vocabularies from the whole catalogue.

    Per sample: `user` and `item` indices (for looking up external vectors),
    `history_items` (N, H) item indices padded with 0, `history_ratings`
    (N, H) ints 1..5 (0 = padding; label-only data uses 1 / 5), and
    `user_fields` (N, F) indices of the categorical user columns (gender, age,
    occupation on ML-1M). `item_genres` (items + 1, G) maps an item index to
    its genre indices, for the model to look up. `cold_items` holds the item
    indices of the split's cold items (`KARSplit.holding_out`), or `None`. Ids are mapped to ints in
    numpy, not with Keras lookup layers (those need TensorFlow).

    Args:
        split: a `KARSplit`.
        data: the `InteractionData` it was built from.
        genre_column: item column holding "|"-joined categories, or `None`.

    Example:
    >>> features = RankingFeatures(split, data)
    >>> features.inputs["train"]["history_items"].shape
    (331236, 30)
    """

    def __init__(
        self, split: KARSplit, data: InteractionData, genre_column: str | None = "genres"
    ) -> None:
        items = data.items
        self.item_vocabulary = _vocabulary(items["item_id"])
        self.user_vocabulary = _vocabulary(user for users in split.users.values() for user in users)
        self.item_genres = self._genre_table(items, genre_column)
        cold = split.cold_items
        self.cold_items = None if cold is None else self.indices(sorted(cold.all, key=str), "item")
        self.user_field_names, user_table = self._user_fields(data.users)
        self.user_field_sizes = [int(column.max()) + 1 for column in user_table.T]
        self.history_length = split.config.max_behaviour_history
        self.inputs, self.labels = {}, {}
        for name in SPLITS:
            samples = split.samples[name]
            user_index = _lookup(self.user_vocabulary, samples["user_id"].tolist())
            self.inputs[name] = {
                "user": user_index,
                "item": _lookup(self.item_vocabulary, samples["item_id"].tolist()),
                "history_items": self._pad(samples["history_item_ids"], self.item_vocabulary),
                "history_ratings": self._ratings(samples["history_ratings"]),
                "user_fields": user_table[user_index],
            }
            self.labels[name] = samples["label"].to_numpy("float32")
        self._tier_inputs = {}

    def _genre_table(self, items, genre_column):
        if genre_column is None or genre_column not in items.columns:
            return np.zeros((len(self.item_vocabulary) + 1, 1), "int32")
        genres = {
            item: str(value).split("|") if value else []
            for item, value in zip(items["item_id"], items[genre_column])
        }
        self.genre_vocabulary = _vocabulary(g for values in genres.values() for g in values)
        width = max(1, max(len(values) for values in genres.values()))
        table = np.zeros((len(self.item_vocabulary) + 1, width), "int32")
        for item, index in self.item_vocabulary.items():
            row = [self.genre_vocabulary[g] for g in genres[item]]
            table[index, : len(row)] = row
        return table

    def _user_fields(self, users):
        # Row u + 1 holds user u's field indices; row 0 (unknown user) is all 0.
        size = len(self.user_vocabulary) + 1
        if users is None:
            return [], np.zeros((size, 0), "int32")
        users = users.set_index("user_id")
        names = [
            column for column in users.columns if users[column].nunique() <= MAX_USER_FIELD_VALUES
        ]
        table = np.zeros((size, len(names)), "int32")
        known = [user for user in self.user_vocabulary if user in users.index]
        rows = [self.user_vocabulary[user] for user in known]
        for column, name in enumerate(names):
            vocabulary = _vocabulary(users[name].astype(str))
            table[rows, column] = _lookup(vocabulary, users.loc[known, name].astype(str).tolist())
        return names, table

    def _pad(self, histories, vocabulary):
        padded = np.zeros((len(histories), self.history_length), "int32")
        for row, history in enumerate(histories):
            if len(history):
                history = history[-self.history_length :]
                padded[row, : len(history)] = _lookup(vocabulary, list(history))
        return padded

    def _ratings(self, histories):
        padded = np.zeros((len(histories), self.history_length), "int32")
        for row, history in enumerate(histories):
            if len(history):
                values = np.asarray(history[-self.history_length :], "float64")
                values = np.where(np.isnan(values), 1, values)
                padded[row, : len(values)] = np.clip(np.rint(values), 1, MAX_RATING)
        return padded

    def item_genre_shares(self, tier: RankerTier) -> np.ndarray:
        """Each item's weights over the genre vocabulary, as the tier sees genres.

        Args:
            tier: a `RankerTier`; "all" genres share an item's weight
                equally, "first" gives its first genre weight 1.

        Returns:
            A float32 (items + 1, genres + 1) table; row 0 (padding) and
            column 0 (no genre) are zero.
        """
        genres = self.item_genres[:, :1] if tier.genres == "first" else self.item_genres
        width = len(getattr(self, "genre_vocabulary", {})) + 1
        shares = np.zeros((len(genres), width), "float32")
        rows = np.repeat(np.arange(len(genres)), genres.shape[1])
        np.add.at(shares, (rows, genres.ravel()), 1.0)
        shares[:, 0] = 0.0
        shares[0] = 0.0  # the padding item
        return shares / np.maximum(shares.sum(axis=1, keepdims=True), 1.0)

    def tier_inputs(self, tier: RankerTier) -> dict[str, dict[str, np.ndarray]]:
        """The DCNv2 inputs of every split as a tier sees them (cached per tier).

        Per sample: `user`, `item`, `history_items` (N, H) with the tier's
        H most recent behaviour items (0 = padding), `history_genres`
        (N, genres + 1) the mean of those items' genre shares,
        `history_ratings` (N, 5) the share of each rating 1..5 among them,
        and `user_fields` (N, F), F = 0 when the tier has no user fields.

        Args:
            tier: a `RankerTier`.

        Returns:
            dict split -> dict name -> array.
        """
        if tier.name in self._tier_inputs:
            return self._tier_inputs[tier.name]
        genre_shares = self.item_genre_shares(tier)
        rating_values = np.arange(1, MAX_RATING + 1)
        tier_inputs = {}
        for name in SPLITS:
            base = self.inputs[name]
            lengths = np.count_nonzero(base["history_items"], axis=1)
            width = min(tier.history_length, base["history_items"].shape[1])
            # Histories are left-aligned, most recent last: keep the last H.
            positions = lengths[:, None] - width + np.arange(width)
            kept = positions >= 0
            positions = np.maximum(positions, 0)
            history = np.where(kept, np.take_along_axis(base["history_items"], positions, 1), 0)
            ratings = np.where(kept, np.take_along_axis(base["history_ratings"], positions, 1), 0)
            counts = np.maximum(np.count_nonzero(history, axis=1), 1)[:, None].astype("float32")
            history_genres = (
                np.concatenate(
                    [
                        genre_shares[history[start : start + SHARE_CHUNK_ROWS]].sum(axis=1)
                        for start in range(0, len(history), SHARE_CHUNK_ROWS)
                    ]
                )
                / counts
            )
            rating_shares = (ratings[..., None] == rating_values).sum(axis=1) / counts
            tier_inputs[name] = {
                "user": base["user"],
                "item": base["item"],
                "history_items": history.astype("int32"),
                "history_genres": history_genres.astype("float32"),
                "history_ratings": rating_shares.astype("float32"),
                "user_fields": base["user_fields"]
                if tier.user_fields
                else np.zeros((len(history), 0), "int32"),
            }
        self._tier_inputs[tier.name] = tier_inputs
        return tier_inputs

    def indices(self, ids: np.ndarray, tower: str) -> np.ndarray:
        """The vocabulary indices of `ids` (any shape) of a tower; unknown ids are 0."""
        vocabulary = self.user_vocabulary if tower == "user" else self.item_vocabulary
        ids = np.asarray(ids)
        return _lookup(vocabulary, ids.ravel().tolist()).reshape(ids.shape)

    def vector_table(
        self, ids: Sequence, vectors: np.ndarray, tower: str, allow_missing: bool = False
    ) -> np.ndarray:
        """Aligns external vectors with this vocabulary, centered per dimension.

        Every dimension gets mean 0 over the training samples' users (items)
        that have a vector: see `marc_keras.ranking.vector_centering.center` for why.

        Args:
            ids: the ids the rows of `vectors` belong to.
            vectors: (len(ids), d) array.
            tower: "user" or "item".
            allow_missing: let sampled ids lack a vector (a store that misses
                a few); they get the training mean, as unknown ids do.

        Returns:
            A float32 (vocabulary + 1, d) table; rows without a vector (row 0,
            unknown, included) are zeros: the training mean.

        Raises:
            ValueError: a sampled id has no vector (unless `allow_missing`),
                or the shapes disagree.
        """
        vocabulary = self.user_vocabulary if tower == "user" else self.item_vocabulary
        vectors = np.asarray(vectors, "float32")
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise ValueError(
                f"{tower} vectors must be (len(ids), d); "
                f"got {len(ids)} ids and shape {vectors.shape}."
            )
        table = np.zeros((len(vocabulary) + 1, vectors.shape[1]), "float32")
        position = {str(identifier): row for row, identifier in enumerate(ids)}
        missing = [identifier for identifier in vocabulary if identifier not in position]
        needed = set()
        for name in SPLITS:
            needed.update(np.unique(self.inputs[name][tower]).tolist())
        missing = [identifier for identifier in missing if vocabulary[identifier] in needed]
        if missing and not allow_missing:
            raise ValueError(
                f"{len(missing)} {tower} ids in the samples have no vector (e.g. {missing[:5]}); "
                f"encode every {tower} of the split."
            )
        has_vector = np.zeros(len(table), bool)
        for identifier, index in vocabulary.items():
            if identifier in position:
                table[index] = vectors[position[identifier]]
                has_vector[index] = True
        training = np.unique(self.inputs["train"][tower])
        table[has_vector] = center(table[has_vector], table[training[has_vector[training]]])
        return table
