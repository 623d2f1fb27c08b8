"""Data and checks shared by the tests (numpy only); fixtures live in conftest.py.

Tests import these as `from helpers import ...`: pytest puts this folder on
sys.path, as it does for the rootdir conftest.
"""

import numpy as np

GENRES = ("action", "comedy", "drama", "horror")
TINY_WORDS = ("the", "a", "movie", "user", "likes", "film", "female", "male", *GENRES)


def low_rank_vectors(rows=500, dim=16, rank=3, noise=0.05, seed=0):
    """Vectors `latent @ mixing + noise` off the origin, and their latent factors."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, rank))
    vectors = latent @ rng.normal(size=(rank, dim)) + noise * rng.normal(size=(rows, dim)) + 3.0
    return vectors, latent


def explained_fraction(codes, target):
    """R^2 of the best affine map from `codes` to `target`."""
    design = np.c_[codes, np.ones(len(codes))]
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = ((design @ coefficients - target) ** 2).sum()
    return 1.0 - residual / ((target - target.mean(axis=0)) ** 2).sum()


def genre_match_task(count, seed=0):
    """User and item texts whose click label is in the texts: genres match."""
    rng = np.random.default_rng(seed)
    user_genres = rng.choice(GENRES, count)
    item_genres = np.where(rng.random(count) < 0.5, user_genres, rng.choice(GENRES, count))
    users = [f"user likes {genre}" for genre in user_genres]
    items = [f"the {genre} movie" for genre in item_genres]
    return users, items, (user_genres == item_genres).astype("float32")
