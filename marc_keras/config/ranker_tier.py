"""Which sparse features the downstream ranker sees: the `kar` and `full` tiers."""

from __future__ import annotations

import dataclasses

GENRE_MODES = ("first", "all")


@dataclasses.dataclass(frozen=True)
class RankerTier:
    """A feature set of the downstream DCNv2 (DESIGN.md Sec. 4).

    A text vector can only add what the ranker lacks, so the lift it shows
    depends on the tier. `kar` is the setting KAR released for ML-1M (its
    `RS/models.py`: item id and one attribute for the target and each of the
    last 5 history items, history ratings, no user demographics) and the one
    comparable with the MARC paper; `full` adds every genre, a 30-item
    history and the categorical user columns.

    Args:
        name: the tier's name in configs and tables.
        history_length: most recent behaviour items the ranker sees.
        genres: "first" (an item's first genre) or "all" (the mean over
            its genres).
        user_fields: whether the categorical user columns (gender, age,
            occupation on ML-1M) are fields.

    Example:
    >>> TIERS["kar"].history_length
    5
    """

    name: str
    history_length: int
    genres: str
    user_fields: bool

    def __post_init__(self):
        if self.genres not in GENRE_MODES:
            raise ValueError(
                f"RankerTier.genres must be one of {GENRE_MODES}; got {self.genres!r}."
            )
        if self.history_length < 1:
            raise ValueError(f"RankerTier.history_length must be >= 1; got {self.history_length}.")


TIERS = {
    tier.name: tier
    for tier in (
        RankerTier("kar", history_length=5, genres="first", user_fields=False),
        RankerTier("full", history_length=30, genres="all", user_fields=True),
    )
}


def resolve_tier(name: str) -> RankerTier:
    """The registered tier called `name`.

    Raises:
        ValueError: `name` is not a tier (the message lists them).
    """
    if name not in TIERS:
        raise ValueError(f"Unknown ranker tier {name!r}; valid tiers are: {', '.join(TIERS)}.")
    return TIERS[name]
