"""The KAR / MARC downstream protocol: user splits, user texts, CTR samples."""

from __future__ import annotations

import dataclasses
import gc
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from marc_keras.config.run_config import TEXT_HISTORY_ORDERS
from marc_keras.data.cold_items import ColdItems
from marc_keras.data.interaction_data import InteractionData
from marc_keras.data.text_templates import TextTemplates

SPLITS = ("train", "validation", "test")
# Above this share of user texts cut by the tokenizer, the encoder misses
# much of what the texts say: warn.
TRUNCATED_TEXT_WARNING_SHARE = 0.05
SAMPLE_COLUMNS = (
    "user_id",
    "item_id",
    "label",
    "rating",
    "timestamp",
    "history_item_ids",
    "history_ratings",
)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Settings of the KAR / MARC split.

    Args:
        seed: Seed of the user permutation that assigns users to splits.
        validation_fraction: Fraction of users (with interactions) held out
            for early stopping and model choice.
        test_fraction: Fraction of users held out for the final test.
        max_text_history: Most history items written into a user's text;
            the text takes the first `min(n // 2, max_text_history)` of a
            user's `n` interactions.
        max_behaviour_history: Most earlier interactions kept as a CTR
            sample's behaviour history.
        text_history_order: "newest_first" writes the text half's most
            recent items first and, when `KARSplit.build` gets a tokenizer's
            `fits`, only as many as fit its `max_length`, so the encoder sees
            the most recent items whole; "oldest_first" is the order of
            earlier versions (the tokenizer then cuts the most recent items).

    Example:
    ```python
    config = SplitConfig(seed=7, max_behaviour_history=50)
    ```
    """

    seed: int = 42
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    max_text_history: int = 30
    max_behaviour_history: int = 30
    text_history_order: str = "newest_first"

    @property
    def newest_first(self) -> bool:
        return self.text_history_order == "newest_first"

    def __post_init__(self) -> None:
        if self.text_history_order not in TEXT_HISTORY_ORDERS:
            raise ValueError(
                f"SplitConfig.text_history_order must be one of {list(TEXT_HISTORY_ORDERS)}, "
                f"got {self.text_history_order!r}."
            )
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"SplitConfig.{name} must be in [0, 1), got {value}.")
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "SplitConfig.validation_fraction + test_fraction must be below 1 "
                f"to leave training users, got {self.validation_fraction} + "
                f"{self.test_fraction}."
            )
        for name in ("seed", "max_text_history", "max_behaviour_history"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"SplitConfig.{name} must be a non-negative integer, got {value!r}."
                )


class KARSplit:
    """Users split into train/validation/test with user texts and CTR samples.

    Follows the KAR / MARC protocol. Each user's interactions are sorted by
    timestamp (ties by item id, then input order). Users with interactions
    are assigned to one split by a seeded permutation. The first
    `min(n // 2, max_text_history)` interactions of a user with `n` go into
    the user's text and are not CTR samples; every later interaction is a
    CTR sample whose behaviour history is the up to `max_behaviour_history`
    interactions before it (most recent last, text-half items included).

    Build it with `KARSplit.build`.

    Args:
        user_texts: Text of every user with interactions.
        item_texts: Text of every item.
        samples: CTR samples per split, with the columns `user_id`,
            `item_id`, `label`, `rating`, `timestamp`, `history_item_ids`
            (list of str) and `history_ratings` (list of float).
        users: User ids per split.
        config: The settings that built it.
        text_halves: Per user, the `(item ids, ratings)` written into the
            user's text (its text half), in time order.
        text_stats: How user texts fit the tokenizer's `max_length` (when
            `build` got one): `users`, `shortened` (texts written with fewer
            history items so that they fit), `truncated` (texts still too
            long, cut by the tokenizer) and `truncated_share`.
        cold_items: the `ColdItems` held out of the training samples
            (`holding_out`), or `None`.

    Example:
    ```python
    data = MovieLens.load()
    split = KARSplit.build(data, MovieLens.text_templates(), SplitConfig())
    train = split.samples["train"]
    split.user_texts[train.user_id[0]]
    ```
    """

    def __init__(
        self,
        *,
        user_texts: dict[str, str],
        item_texts: dict[str, str],
        samples: dict[str, pd.DataFrame],
        users: dict[str, list[str]],
        config: SplitConfig,
        text_halves: dict[str, tuple[list[str], list[float]]] | None = None,
        text_stats: dict[str, float] | None = None,
        cold_items: ColdItems | None = None,
    ) -> None:
        self.user_texts = user_texts
        self.item_texts = item_texts
        self.samples = samples
        self.users = users
        self.config = config
        self.text_halves = text_halves or {}
        self.text_stats = text_stats
        self.cold_items = cold_items

    def holding_out(self, cold_items: ColdItems) -> KARSplit:
        """This split with the cold items' samples out of the training split.

        The cold-item protocol (`marc_keras.data.cold_items`): MARC, the
        rankers and the retrievers then never train on a cold item's pair;
        validation and test samples are kept, and the re-ranking and
        retrieval tables judge users on their split's cold items.
        """
        train = self.samples["train"]
        kept = train[~train["item_id"].isin(cold_items.all)].reset_index(drop=True)
        return KARSplit(
            user_texts=self.user_texts,
            item_texts=self.item_texts,
            samples={**self.samples, "train": kept},
            users=self.users,
            config=self.config,
            text_halves=self.text_halves,
            text_stats=self.text_stats,
            cold_items=cold_items,
        )

    @classmethod
    def build(
        cls,
        data: InteractionData,
        templates: TextTemplates,
        config: SplitConfig | None = None,
        fits: Callable[[Sequence[str]], np.ndarray] | None = None,
    ) -> KARSplit:
        """Split users, render texts and cut CTR samples.

        Args:
            data: The interactions with item and user attributes.
            templates: How users and items become texts.
            config: Split settings; defaults to `SplitConfig()`.
            fits: The encoder's tokenizer check (`TextTokenizer.fits`):
                texts -> bool array, `False` for a text longer than its
                `max_length`. With it, newest-first user texts keep as many
                recent items as fit, and `text_stats` counts what was cut;
                a warning says when over 5% of user texts are cut.

        Returns:
            The split.

        Example:
        ```python
        split = KARSplit.build(data, templates, SplitConfig(seed=1))
        ```
        """
        config = config or SplitConfig()
        user_fields = ["user_id"] if data.users is None else list(data.users.columns)
        templates.check_fields(user_fields, data.items.columns)

        # A stable sort keeps input order for exact (user, time, item) ties.
        events = data.interactions.sort_values(
            ["user_id", "timestamp", "item_id"], kind="stable", ignore_index=True
        )
        user_ids = events["user_id"].to_numpy()
        count = len(events)
        starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
        lengths = np.diff(np.r_[starts, count])
        text_lengths = np.minimum(lengths // 2, config.max_text_history)
        positions = np.arange(count) - np.repeat(starts, lengths)
        is_sample = positions >= np.repeat(text_lengths, lengths)

        unique_users = user_ids[starts]
        split_of_user = cls._assign_users(len(unique_users), config)
        users = {
            name: unique_users[split_of_user == code].tolist() for code, name in enumerate(SPLITS)
        }

        item_list = events["item_id"].tolist()
        rating_list = events["rating"].tolist()
        history_items, history_ratings = cls._histories(
            item_list, rating_list, starts, lengths, text_lengths, config
        )
        samples_frame = events.loc[is_sample, list(SAMPLE_COLUMNS[:5])]
        samples_frame = samples_frame.reset_index(drop=True)
        samples_frame["history_item_ids"] = history_items
        samples_frame["history_ratings"] = history_ratings
        sample_split = np.repeat(split_of_user, lengths - text_lengths)
        samples = {
            name: samples_frame[sample_split == code].reset_index(drop=True)
            for code, name in enumerate(SPLITS)
        }

        item_rows = {row["item_id"]: row for row in data.items.to_dict("records")}
        item_texts = {item_id: templates.render_item(row) for item_id, row in item_rows.items()}
        user_rows = (
            {}
            if data.users is None
            else {row["user_id"]: row for row in data.users.to_dict("records")}
        )
        label_list = events["label"].tolist()
        text_histories, text_halves = {}, {}
        for user_id, start, text_length in zip(
            unique_users.tolist(), starts.tolist(), text_lengths.tolist()
        ):
            rows = [
                {
                    **item_rows[item_list[index]],
                    "rating": rating_list[index],
                    "label": label_list[index],
                }
                for index in range(start, start + text_length)
            ]
            text_histories[user_id] = rows[::-1] if config.newest_first else rows
            text_halves[user_id] = (
                item_list[start : start + text_length],
                rating_list[start : start + text_length],
            )

        def render(user_id: str, history_rows: list[dict]) -> str:
            return templates.render_user(user_rows.get(user_id, {"user_id": user_id}), history_rows)

        user_texts = {user: render(user, rows) for user, rows in text_histories.items()}
        text_stats = None
        if fits is not None:
            text_stats = cls._fit_user_texts(
                user_texts, text_histories, render, fits, shorten=config.newest_first
            )
        return cls(
            user_texts=user_texts,
            item_texts=item_texts,
            samples=samples,
            users=users,
            config=config,
            text_halves=text_halves,
            text_stats=text_stats,
        )

    @staticmethod
    def _fit_user_texts(
        user_texts: dict[str, str],
        text_histories: dict[str, list[dict]],
        render: Callable[[str, list[dict]], str],
        fits: Callable[[Sequence[str]], np.ndarray],
        shorten: bool,
    ) -> dict[str, float]:
        """Re-renders overlong texts with their first k history items, k as large as fits.

        A binary search per user, batched over users so the tokenizer sees
        a few thousand texts per call. Edits `user_texts` in place.
        """
        users = list(user_texts)
        too_long = [user for user, ok in zip(users, fits([user_texts[u] for u in users])) if not ok]
        shortened = too_long if shorten else []
        # Invariant: `low` items may fit (0 is the floor), `high + 1` items do not.
        low = dict.fromkeys(shortened, 0)
        high = {user: len(text_histories[user]) - 1 for user in shortened}
        while active := [user for user in shortened if low[user] < high[user]]:
            middles = [(low[user] + high[user] + 1) // 2 for user in active]
            texts = [render(u, text_histories[u][:k]) for u, k in zip(active, middles)]
            for user, middle, ok in zip(active, middles, fits(texts)):
                if ok:
                    low[user] = middle
                else:
                    high[user] = middle - 1
        for user in shortened:
            user_texts[user] = render(user, text_histories[user][: low[user]])
        if shorten:
            refitted = [user_texts[user] for user in shortened]
            # `fits([])` may come back as a float array; nothing to count then.
            truncated = int((~np.asarray(fits(refitted), bool)).sum()) if refitted else 0
        else:
            truncated = len(too_long)
        stats = {
            "users": len(users),
            "shortened": len(shortened),
            "truncated": truncated,
            "truncated_share": truncated / max(len(users), 1),
        }
        if stats["truncated_share"] > TRUNCATED_TEXT_WARNING_SHARE:
            warnings.warn(
                f"{100 * stats['truncated_share']:.0f}% of user texts are longer than the "
                "encoder's max_length and will be cut by its tokenizer"
                + (
                    ", dropping their most recent items; set data.text_history_order = "
                    "'newest_first' or raise model.max_length."
                    if not shorten
                    else "; shorten the user template or raise model.max_length."
                ),
                stacklevel=3,
            )
        return stats

    def sample(self, split: str, n: int, seed: int | None = None) -> pd.DataFrame:
        """Draw a deterministic subset of a split's CTR samples.

        Rows are drawn without replacement and returned in their original
        (user, time) order; `n` at or above the split's size returns all.

        Args:
            split: "train", "validation" or "test".
            n: Number of samples.
            seed: Seed of the draw; defaults to `config.seed`.

        Returns:
            The sampled rows, index reset.

        Example:
        ```python
        quick = split.sample("train", 10_000, seed=0)
        ```
        """
        if split not in self.samples:
            raise ValueError(f"Unknown split {split!r}; use one of {list(self.samples)}.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}.")
        frame = self.samples[split]
        if n >= len(frame):
            return frame.copy()
        rng = np.random.default_rng(self.config.seed if seed is None else seed)
        rows = np.sort(rng.choice(len(frame), size=n, replace=False))
        return frame.iloc[rows].reset_index(drop=True)

    @staticmethod
    def _assign_users(user_count: int, config: SplitConfig) -> np.ndarray:
        """Return each user's split code (index into `SPLITS`)."""
        test_count = round(config.test_fraction * user_count)
        validation_count = min(
            round(config.validation_fraction * user_count), user_count - test_count
        )
        order = np.random.default_rng(config.seed).permutation(user_count)
        codes = np.zeros(user_count, dtype=np.int8)
        codes[order[:test_count]] = SPLITS.index("test")
        codes[order[test_count : test_count + validation_count]] = SPLITS.index("validation")
        return codes

    @staticmethod
    def _histories(
        item_list: list[str],
        rating_list: list[float],
        starts: np.ndarray,
        lengths: np.ndarray,
        text_lengths: np.ndarray,
        config: SplitConfig,
    ) -> tuple[list[list[str]], list[list[float]]]:
        """Behaviour history of every CTR sample, in sample order."""
        window = config.max_behaviour_history
        history_items: list[list[str]] = []
        history_ratings: list[list[float]] = []
        # Creating ~1M lists triggers many cyclic-GC passes over everything
        # allocated so far (3-4x the loop's own cost); lists of str/float
        # cannot form cycles, so collection is paused while building them.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for start, length, text_length in zip(
                starts.tolist(), lengths.tolist(), text_lengths.tolist()
            ):
                # Slicing per-user lists shares the element objects across
                # the overlapping windows instead of creating new ones.
                items = item_list[start : start + length]
                ratings = rating_list[start : start + length]
                for end in range(text_length, length):
                    begin = max(0, end - window)
                    history_items.append(items[begin:end])
                    history_ratings.append(ratings[begin:end])
        finally:
            if gc_was_enabled:
                gc.enable()
        return history_items, history_ratings
