"""Leave-one-out sequences for a generative recommender (BIGRec / L2D, Sec. 4.1 of 2509.11524)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from marc_keras.data.interaction_data import InteractionData


@dataclasses.dataclass(frozen=True)
class SequentialSplit:
    """Each user's time-ordered items, cut into training windows and held-out targets.

    Per user, interactions are sorted by timestamp (ties keep the file
    order). The last item is the user's test target, the second-to-last the
    validation target, each with up to `history_length` items before it as
    history. Every earlier item (from the second on) is the target of a
    training window of the up to `history_length` items before it, so a
    training target never comes after a held-out one. Users with fewer than
    three items have no held-out targets and give no samples.

    Each frame below has the columns `user_id` (str), `history` (tuple of
    item ids, oldest first) and `target` (item id).

    Args:
        train: every training window.
        validation: one row per user (their second-to-last item).
        test: one row per user (their last item).
        history_length: the most history items per sample.

    Example:
    >>> split = SequentialSplit.build(MovieLens.load(), history_length=10)
    >>> samples = split.sample("train", 1000, seed=0)
    >>> samples.columns.tolist()
    ['user_id', 'history', 'target']
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    history_length: int

    @classmethod
    def build(
        cls, data: InteractionData, history_length: int = 10, positives_only: bool = False
    ) -> SequentialSplit:
        """Builds the split from interactions.

        Args:
            data: the interactions (and items).
            history_length: the most history items per sample (>= 1).
            positives_only: keep only interactions labelled 1 (a liked
                item as the next item); `False` keeps every interaction, as
                BIGRec and D3 do on MovieLens.

        Returns:
            A `SequentialSplit`.

        Raises:
            ValueError: `history_length` < 1, or no user has three items.
        """
        if int(history_length) < 1:
            raise ValueError(f"history_length must be >= 1; got {history_length}.")
        history_length = int(history_length)
        interactions = data.interactions
        if positives_only:
            interactions = interactions[interactions["label"] == 1]
        ordered = interactions.reset_index(drop=True).sort_values(
            ["user_id", "timestamp"], kind="stable"
        )
        rows = {"train": [], "validation": [], "test": []}
        for user_id, items in ordered.groupby("user_id", sort=True)["item_id"]:
            items = items.tolist()
            if len(items) < 3:
                continue
            for position in range(1, len(items)):
                history = tuple(items[max(0, position - history_length) : position])
                part = (
                    "test"
                    if position == len(items) - 1
                    else "validation"
                    if position == len(items) - 2
                    else "train"
                )
                rows[part].append((str(user_id), history, items[position]))
        if not rows["test"]:
            raise ValueError(
                "No user has three or more interactions"
                + (" labelled 1" if positives_only else "")
                + "; leave-one-out needs a training item, a validation item and a test item."
            )
        frames = {
            name: pd.DataFrame(values, columns=["user_id", "history", "target"])
            for name, values in rows.items()
        }
        return cls(**frames, history_length=history_length)

    def sample(self, part: str, count: int | None, seed: int = 0) -> pd.DataFrame:
        """A reproducible random subset of one part (all of it if `count` is `None` or larger).

        Args:
            part: "train", "validation" or "test".
            count: rows wanted.
            seed: sampling seed.

        Returns:
            The rows, in a random order fixed by `seed`.
        """
        if part not in ("train", "validation", "test"):
            raise ValueError(f"part must be 'train', 'validation' or 'test'; got '{part}'.")
        frame = getattr(self, part)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(frame))
        if count is not None:
            order = order[: int(count)]
        return frame.iloc[order].reset_index(drop=True)
