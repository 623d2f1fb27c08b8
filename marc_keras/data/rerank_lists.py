"""Re-ranking lists in KAR's released protocol (MARC paper Sec. 4.2.2, Table 3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from marc_keras.data.kar_split import KARSplit


@dataclasses.dataclass(frozen=True)
class RerankLists:
    """Candidate lists of one split: rated items of a user padded with random ones.

    As KAR builds them (`preprocess/generate_data_and_prompt.py`,
    `generate_rerank_data`): each user's ranker-side sequence (the CTR samples
    after the text half, in time order) is cut into non-overlapping chunks of
    `items_from_history` consecutive rated items, each keeping its click
    label; each chunk is filled up to `list_length` with items drawn without
    replacement from the whole catalogue and labelled 0 (KAR does not exclude
    the user's own items, and neither does this), and the list is shuffled.
    There is no initial ranker: list order carries no signal. Seeded, so the
    same split and seed give the same lists.

    Attributes:
        user_ids: (L,) the user of each list.
        item_ids: (L, n) the candidates, as catalogue item ids.
        labels: (L, n) float32 click labels (0 for the padding items).
        positions: (L,) index in the user's ranker-side sequence where the
            list's chunk starts.

    Example:
    >>> lists = RerankLists.from_split(split, "test", seed=0)
    >>> lists.item_ids.shape
    (7512, 10)
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    labels: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_split(
        cls,
        split: KARSplit,
        name: str,
        seed: int,
        items_from_history: int = 4,
        list_length: int = 10,
        catalogue: Sequence[str] | None = None,
        rated_items: Collection[str] | None = None,
    ) -> RerankLists:
        """The lists of split `name` ("train", "validation" or "test").

        Args:
            split: a `KARSplit`.
            name: which split's CTR samples.
            seed: seed of the padding draws and the shuffles.
            items_from_history: rated items per list (KAR: 4).
            list_length: items per list (KAR: 10).
            catalogue: item ids to pad from; `None` is every item with a text.
            rated_items: keep only the rated items among these (the cold
                split's lists: `ColdItems`) before cutting the chunks; `None`
                keeps all.

        Raises:
            ValueError: an unknown split, or sizes that leave no room for a
                rated item or exceed the catalogue.
        """
        if name not in split.samples:
            raise ValueError(f"Unknown split {name!r}; use one of {list(split.samples)}.")
        if not 1 <= int(items_from_history) <= int(list_length):
            raise ValueError(
                f"items_from_history must be in [1, list_length={list_length}]; "
                f"got {items_from_history}."
            )
        catalogue = np.asarray(sorted(split.item_texts) if catalogue is None else catalogue)
        if int(list_length) > len(catalogue):
            raise ValueError(
                f"list_length {list_length} exceeds the catalogue of {len(catalogue)} items."
            )
        samples = split.samples[name]
        if rated_items is not None:
            samples = samples[samples["item_id"].isin(set(rated_items))]
        rng = np.random.default_rng(seed)
        users, items, labels, positions = [], [], [], []
        for user, rows in samples.groupby("user_id", sort=False):
            rated = rows.item_id.to_numpy()
            clicks = rows.label.to_numpy("float32")
            for start in range(0, len(rated), items_from_history):
                chosen = rated[start : start + items_from_history]
                padding = rng.choice(catalogue, list_length - len(chosen), replace=False)
                candidates = np.concatenate([chosen, padding])
                candidate_labels = np.concatenate(
                    [clicks[start : start + items_from_history], np.zeros(len(padding), "float32")]
                )
                order = rng.permutation(list_length)
                users.append(user)
                items.append(candidates[order])
                labels.append(candidate_labels[order])
                positions.append(start)
        return cls(
            user_ids=np.asarray(users),
            item_ids=np.asarray(items),
            labels=np.asarray(labels, "float32"),
            positions=np.asarray(positions, "int64"),
        )
