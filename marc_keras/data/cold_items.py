"""Cold items: a share of the catalogue held out of every ranker's training (issue 29).

Follows ColdRec's item split (`data/split.py` of YuanchenBei/ColdRec): the
items with interactions are shuffled with a seed, a share of them becomes
cold, and the cold items are divided in halves between cold validation and
cold test. Every interaction with a cold item leaves the training data of the
downstream rankers and retrievers; validation users are judged on the
validation half, test users on the test half, so model choice never sees a
test item. Cold items keep their attributes and texts (their vectors), and
lose their id: models map them to one shared out-of-vocabulary index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from marc_keras.data.kar_split import KARSplit

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class ColdItems:
    """The cold items of a split, by the user split that is judged on them.

    Attributes:
        validation: item ids judged on validation users.
        test: item ids judged on test users.
        share: the share of the items with interactions that is cold.
        seed: seed of the draw.

    Example:
    >>> cold = ColdItems.draw(split, share=0.2, seed=0)
    >>> cold.of("test")[:3]
    """

    validation: frozenset
    test: frozenset
    share: float
    seed: int

    @property
    def all(self) -> frozenset:
        """Every cold item (the halves together)."""
        return self.validation | self.test

    def warm(self, catalogue: Iterable) -> list:
        """The items of `catalogue` that are not cold, in its order."""
        return [item for item in catalogue if item not in self.all]

    def of(self, split: str) -> frozenset:
        """The cold items judged on users of `split` ("train" has none)."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; use one of {list(SPLITS)}.")
        return frozenset() if split == "train" else getattr(self, split)

    def swapped(self) -> ColdItems:
        """The same cold items with the halves' roles exchanged.

        Validation users are then judged on the test half and test users on
        the validation half. Every cold item is still out of every training
        split, so the re-ranking table's second fold (`RerankSettings.
        cold_item_folds`) needs no new MARC run.
        """
        return dataclasses.replace(self, validation=self.test, test=self.validation)

    @classmethod
    def draw(cls, split: KARSplit, share: float, seed: int = 0) -> ColdItems:
        """Draws `share` of the items that have interactions as cold items.

        Args:
            split: the `KARSplit`; its text halves and CTR samples say which
                items have interactions.
            share: in (0, 1): the cold share (ColdRec: 0.2).
            seed: seed of the shuffle.

        Raises:
            ValueError: a share outside (0, 1), or one that leaves fewer than
                two cold items (one per judged split).
        """
        if isinstance(share, bool) or not 0.0 < float(share) < 1.0:
            raise ValueError(
                f"evaluate.cold_item_share must be in (0, 1) to draw cold items (0 = off); "
                f"got {share!r}."
            )
        seen = set()
        for items, _ in split.text_halves.values():
            seen.update(items)
        for samples in split.samples.values():
            seen.update(samples["item_id"].tolist())
        items = np.asarray(sorted(seen, key=str), dtype=object)
        cold_count = int(round(float(share) * len(items)))
        if cold_count < 2:
            raise ValueError(
                f"evaluate.cold_item_share {share} of {len(items)} items with interactions "
                f"gives {cold_count} cold items; at least 2 are needed (one per validation and "
                "test). Raise the share."
            )
        order = np.random.default_rng(seed).permutation(len(items))
        cold = items[order[:cold_count]]
        half = cold_count // 2
        return cls(
            validation=frozenset(cold[:half].tolist()),
            test=frozenset(cold[half:].tolist()),
            share=float(share),
            seed=int(seed),
        )
