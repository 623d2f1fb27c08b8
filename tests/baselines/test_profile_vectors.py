import types

import numpy as np
import pandas as pd

from marc_keras.baselines.profile_vectors import ProfileVectors


def test_profile_vectors_by_hand():
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "genres": ["Drama|Comedy", "Drama", ""]})
    split = types.SimpleNamespace(
        text_halves={"u1": (["a", "b"], [4.0, 2.0]), "u2": (["c"], [5.0])},
        users={"train": ["u1"], "validation": [], "test": ["u2"]},
    )
    (user_ids, users), (item_ids, item_vectors) = ProfileVectors(split, items).vectors()
    assert user_ids == ["u1", "u2"] and item_ids == ["a", "b", "c"]
    # genres sorted: Comedy, Drama
    np.testing.assert_allclose(
        users[0], [3.0, np.log1p(2), 0.5, 1.0, 4.0, 3.0], rtol=1e-6
    )  # mean, log count, shares (Comedy 1/2, Drama 2/2), genre means (4, (4+2)/2)
    np.testing.assert_allclose(users[1], [5.0, np.log1p(1), 0, 0, 5.0, 5.0], rtol=1e-6)
    # Items: mean rating over training users' text halves (u1 only), else the global mean.
    np.testing.assert_allclose(
        item_vectors, [[4.0, np.log1p(1)], [2.0, np.log1p(1)], [3.0, 0.0]], rtol=1e-6
    )


def test_release_year_from_the_title_in_decades_from_1990():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Heat (1995)", "Toy Story (1975) ", "No year"],
            "genres": ["Drama", "Drama", ""],
        }
    )
    split = types.SimpleNamespace(
        text_halves={"u1": (["a"], [4.0])}, users={"train": ["u1"], "validation": [], "test": []}
    )
    _, (_, item_vectors) = ProfileVectors(split, items).vectors(unseen_items={"b"})
    # c has no year: the catalogue's mean year, 1985; b is unseen but keeps its year.
    np.testing.assert_allclose(item_vectors[:, 2], [0.5, -1.5, -0.5], rtol=1e-6)
    np.testing.assert_allclose(item_vectors[1, :2], [4.0, 0.0], rtol=1e-6)
