"""The `random` control: a fixed Gaussian vector per id, as spread out as real vectors."""

from __future__ import annotations

import numpy as np


class RandomVectors:
    """One Gaussian vector per id, with a reference's per-dimension std.

    A negative control of the downstream table (downstream v2): the
    vectors carry no information about the user or item beyond its
    identity. If `random` beats DCNv2 alone, the ranker gains from
    memorising ids through the adaptor, and a text row's lift may be that
    too.

    Args:
        reference: (n, d) vectors whose per-dimension std the random
            vectors match (the frozen backbone's, in the table).
        seed: seed of the draw.

    Example:
    >>> users = RandomVectors(frozen_users, seed=0).draw(len(user_ids))
    """

    def __init__(self, reference: np.ndarray, seed: int) -> None:
        self.scale = np.asarray(reference, "float64").std(axis=0)
        self.seed = int(seed)

    def draw(self, count: int, stream: int = 0) -> np.ndarray:
        """`count` vectors; `stream` separates draws of the same seed (users, items)."""
        rng = np.random.default_rng([self.seed, int(stream)])
        return (rng.standard_normal((count, len(self.scale))) * self.scale).astype("float32")
