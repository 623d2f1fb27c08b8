"""Retrieval queries of one user split: the two-tower protocol of marc-keras (issue 29).

MARC's retrieval table (paper Sec. 4.2.2, Table 2) publishes no protocol;
this one is written down in README ("Retrieval") and kept:

- a query is a user at the end of the user's text half: the query's history
  is the text half's items (the same items the user's text states);
- the candidates are the whole catalogue (warm split) or, with cold items
  (`ColdItems`), the cold items of the user's split only (cold split); the
  user's text-half items are never candidates for that user;
- the positives are the user's ranker-side items (the CTR samples after the
  text half) with a click label (rating >= 4 on MovieLens) among the
  candidates; users without one are not queries;
- training pairs are (training user, positive item) over the training users'
  ranker-side clicks, cold items left out.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from marc_keras.data.cold_items import ColdItems
    from marc_keras.data.kar_split import KARSplit

SPLITS = ("train", "validation", "test")
ITEM_SETS = ("warm", "cold")


@dataclasses.dataclass(frozen=True)
class RetrievalQueries:
    """The queries, positives and candidates of one user split.

    Attributes:
        user_ids: (U,) users with at least one positive.
        histories: per user, the text half's item ids in time order.
        positives: per user, the clicked ranker-side item ids among the
            candidates (no repeats).
        candidate_ids: (C,) the item ids ranked for every query.
        item_set: "warm" or "cold".

    Example:
    >>> queries = RetrievalQueries.from_split(split, "test")
    >>> len(queries), len(queries.candidate_ids)
    """

    user_ids: np.ndarray
    histories: list
    positives: list
    candidate_ids: np.ndarray
    item_set: str

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_split(
        cls,
        split: KARSplit,
        name: str,
        cold: ColdItems | None = None,
        item_set: str = "warm",
    ) -> RetrievalQueries:
        """The queries of split `name` on the warm or cold items.

        Args:
            split: a `KARSplit`.
            name: "train", "validation" or "test".
            cold: the cold items, or `None` (no cold items: "warm" is the
                whole catalogue).
            item_set: "warm" (candidates: every item that is not cold) or
                "cold" (candidates: the cold items judged on `name`).

        Raises:
            ValueError: an unknown split or item set, or "cold" without
                cold items or on the training split.
        """
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; use one of {list(SPLITS)}.")
        if item_set not in ITEM_SETS:
            raise ValueError(f"Unknown item set {item_set!r}; use one of {list(ITEM_SETS)}.")
        if item_set == "cold" and (cold is None or name == "train"):
            raise ValueError(
                "Cold-item queries need cold items (evaluate.cold_item_share > 0) and a "
                f"validation or test split; got cold={cold is not None}, split {name!r}."
            )
        catalogue = sorted(split.item_texts, key=str)
        if item_set == "cold":
            candidates = sorted(cold.of(name), key=str)
        else:
            candidates = catalogue if cold is None else cold.warm(catalogue)
        allowed = set(candidates)
        clicked = split.samples[name]
        clicked = clicked[clicked["label"] > 0]
        users, histories, positives = [], [], []
        for user, rows in clicked.groupby("user_id", sort=True):
            history = list(split.text_halves.get(user, ([], []))[0])
            seen = set(history)
            found = [item for item in dict.fromkeys(rows["item_id"]) if item in allowed]
            found = [item for item in found if item not in seen]
            if found:
                users.append(user)
                histories.append(history)
                positives.append(found)
        return cls(
            user_ids=np.asarray(users, dtype=object),
            histories=histories,
            positives=positives,
            candidate_ids=np.asarray(candidates, dtype=object),
            item_set=item_set,
        )

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(query rows, item ids) of every (query, positive) pair: the training pairs.

        A query row indexes `user_ids` and `histories`.
        """
        counts = [len(found) for found in self.positives]
        users = np.repeat(np.arange(len(self.user_ids)), counts)
        items = np.asarray([item for found in self.positives for item in found], dtype=object)
        return users, items
