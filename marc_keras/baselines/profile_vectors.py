"""The `profile` control: small hand-made vectors from the same text half as the user texts."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from marc_keras.data.kar_split import KARSplit

# MovieLens titles end in the release year: "Heat (1995)".
TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


class ProfileVectors:
    """User and item vectors of rating statistics, computed from the users' text halves.

    A positive control of the downstream table (downstream v2): a few
    numbers a ranker can use, built from exactly the interactions the user
    texts describe. If the `profile` row does not beat DCNv2 alone, the
    adaptor path cannot carry even obvious signal, and no text row can be
    read.

    User vector: mean rating, log(1 + count), and per genre the share of
    the text half's items in it and their mean rating (the user's mean
    where none). Item vector: its mean rating and log(1 + count) over the
    text halves of training users (the global mean where unseen), and, when
    the titles end in a year as MovieLens' do, the release year in decades
    from 1990 (the catalogue's mean where a title has none). The year is the
    one fact of the item text that neither the downstream models' ids nor
    their genres hold, and the only one a cold item (no interactions) has.

    Args:
        split: a `KARSplit` (its `text_halves`).
        items: the items table, with `item_id` and "|"-joined `genres`
            (other tables: genre columns are left out).
        genre_column: name of the genre column.
        title_column: name of the title column (no year without it).

    Returns:
        `vectors()` gives `((user ids, user vectors), (item ids, item vectors))`.

    Example:
    >>> (user_ids, users), (item_ids, items) = ProfileVectors(split, data.items).vectors()
    """

    def __init__(
        self,
        split: KARSplit,
        items: pd.DataFrame,
        genre_column: str = "genres",
        title_column: str = "title",
    ) -> None:
        self.split = split
        self.item_ids = items["item_id"].astype(str).tolist()
        genres = (
            items[genre_column].fillna("").astype(str).tolist()
            if genre_column in items.columns
            else [""] * len(items)
        )
        self.item_genres = {
            item: [g for g in value.split("|") if g] for item, value in zip(self.item_ids, genres)
        }
        self.genres = sorted({g for values in self.item_genres.values() for g in values})
        self.release_decades = None
        if title_column in items.columns:
            years = [
                TITLE_YEAR.search(title)
                for title in items[title_column].fillna("").astype(str).tolist()
            ]
            found = [float(year.group(1)) for year in years if year]
            if found:
                mean = float(np.mean(found))
                self.release_decades = (
                    np.array([float(year.group(1)) if year else mean for year in years]) - 1990.0
                ) / 10.0

    def vectors(
        self, unseen_items: Collection[str] = ()
    ) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
        """`((user ids, (users, 2 + 2 * genres)), (item ids, (items, 2 or 3)))` float32 arrays.

        Args:
            unseen_items: items whose interactions the item vectors must not
                use (cold items): they get the unseen item's vector.
        """
        unseen_items = frozenset(unseen_items)
        genre_index = {genre: index for index, genre in enumerate(self.genres)}
        halves = self.split.text_halves
        user_ids = sorted(halves)
        width = 2 + 2 * len(self.genres)
        users = np.zeros((len(user_ids), width), "float32")
        for row, user in enumerate(user_ids):
            items, ratings = halves[user]
            ratings = np.nan_to_num(np.asarray(ratings, "float64"), nan=1.0)
            mean = ratings.mean() if len(ratings) else 0.0
            counts, sums = np.zeros(len(self.genres)), np.zeros(len(self.genres))
            for item, rating in zip(items, ratings):
                for genre in self.item_genres.get(item, ()):
                    counts[genre_index[genre]] += 1
                    sums[genre_index[genre]] += rating
            users[row, 0], users[row, 1] = mean, np.log1p(len(ratings))
            users[row, 2 : 2 + len(self.genres)] = counts / max(len(ratings), 1)
            users[row, 2 + len(self.genres) :] = np.where(
                counts > 0, sums / np.maximum(counts, 1), mean
            )
        seen, totals = {}, {}
        for user in self.split.users["train"]:
            items, ratings = halves.get(user, ((), ()))
            for item, rating in zip(items, np.nan_to_num(np.asarray(ratings, float), nan=1.0)):
                if item in unseen_items:
                    continue
                seen[item] = seen.get(item, 0) + 1
                totals[item] = totals.get(item, 0.0) + rating
        global_mean = sum(totals.values()) / max(sum(seen.values()), 1)
        items = np.array(
            [
                [
                    totals[item] / seen[item] if item in seen else global_mean,
                    np.log1p(seen.get(item, 0)),
                ]
                for item in self.item_ids
            ],
            "float32",
        )
        if self.release_decades is not None:
            items = np.c_[items, self.release_decades].astype("float32")
        return (user_ids, users), (self.item_ids, items)
