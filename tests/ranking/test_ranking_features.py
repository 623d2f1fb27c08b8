import numpy as np
import pytest

from marc_keras.data import KARSplit, MovieLens, SplitConfig
from marc_keras.config.ranker_tier import TIERS
from marc_keras.ranking.ranking_features import RankingFeatures


@pytest.fixture(scope="module")
def real(ml1m_dir):
    data = MovieLens.load(ml1m_dir)
    split = KARSplit.build(data, MovieLens.text_templates(), SplitConfig())
    return split, RankingFeatures(split, data)


def test_shapes_and_vocabularies_on_the_shared_data(real):
    split, features = real
    train = features.inputs["train"]
    assert len(train["item"]) == len(split.samples["train"]) == len(features.labels["train"])
    assert train["history_items"].shape == (len(train["item"]), 30)
    assert features.user_field_names == ["gender", "age", "occupation"]
    assert features.user_field_sizes == [3, 8, 22]
    assert features.item_genres.shape == (3884, 6)
    for name in ("train", "validation", "test"):
        assert (features.inputs[name]["item"] > 0).all() and (
            features.inputs[name]["user"] > 0
        ).all()
    np.testing.assert_array_equal(
        features.labels["test"], split.samples["test"]["label"].to_numpy()
    )


def test_history_is_left_aligned_and_padded_with_zeros(real):
    split, features = real
    history = features.inputs["train"]["history_items"]
    ratings = features.inputs["train"]["history_ratings"]
    np.testing.assert_array_equal(history > 0, ratings > 0)
    lengths = np.array([len(h) for h in split.samples["train"]["history_item_ids"]])
    np.testing.assert_array_equal((history > 0).sum(axis=1), np.minimum(lengths, 30))
    first = split.samples["train"].iloc[0]
    assert history[0, 0] == features.item_vocabulary[first["history_item_ids"][0]]


def test_vector_tables_align_and_name_missing_ids(real):
    _, features = real
    ids = list(features.item_vocabulary)
    vectors = np.arange(len(ids) * 2, dtype="float32").reshape(len(ids), 2)
    table = features.vector_table(ids[::-1], vectors[::-1], "item")
    training = vectors[np.unique(features.inputs["train"]["item"]) - 1]
    np.testing.assert_allclose(
        table[features.item_vocabulary[ids[5]]], vectors[5] - training.mean(axis=0), rtol=1e-5
    )
    assert (table[0] == 0).all()
    with pytest.raises(ValueError, match="user ids in the samples have no vector"):
        features.vector_table(["1"], np.zeros((1, 2)), "user")
    with pytest.raises(ValueError, match="must be \\(len\\(ids\\), d\\)"):
        features.vector_table(ids, np.zeros((3, 2)), "item")


def test_vector_tables_are_centered_on_training_rows_only(real):
    _, features = real
    ids = list(features.user_vocabulary)
    rng = np.random.default_rng(0)
    # A decoder-like "massive activation": one dimension sits near 500 with a small spread.
    vectors = np.column_stack([rng.normal(500.0, 3.0, len(ids)), rng.normal(0.0, 0.01, len(ids))])
    table = features.vector_table(ids, vectors, "user")
    train_users = np.unique(features.inputs["train"]["user"])
    np.testing.assert_allclose(table[train_users].mean(axis=0), 0.0, atol=1e-3)
    test_users = np.setdiff1d(np.unique(features.inputs["test"]["user"]), train_users)
    assert len(test_users) > 0
    # vocabulary index i holds ids[i - 1]
    train_mean = vectors[train_users - 1].mean(axis=0)
    np.testing.assert_allclose(
        table[test_users], vectors[test_users - 1] - train_mean, rtol=1e-4, atol=1e-4
    )


def test_ids_without_a_vector_get_the_training_mean_when_allowed(real):
    _, features = real
    ids = list(features.user_vocabulary)
    vectors = np.random.default_rng(1).normal(3.0, 1.0, (len(ids), 2))
    train_users = np.unique(features.inputs["train"]["user"])
    dropped = int(train_users[0])  # vocabulary index i holds ids[i - 1]
    kept = [index for index in range(1, len(ids) + 1) if index != dropped]
    table = features.vector_table(
        [ids[index - 1] for index in kept], vectors[np.array(kept) - 1], "user", allow_missing=True
    )
    assert (table[dropped] == 0).all()
    train_mean = vectors[train_users[1:] - 1].mean(axis=0)
    np.testing.assert_allclose(
        table[kept[0]], vectors[kept[0] - 1] - train_mean, rtol=1e-4, atol=1e-5
    )


def test_tier_inputs_keep_the_most_recent_items_and_their_shares(real):
    split, features = real
    kar = features.tier_inputs(TIERS["kar"])["train"]
    full = features.tier_inputs(TIERS["full"])["train"]
    history = features.inputs["train"]["history_items"]
    row = 1000
    items = history[row][history[row] > 0]
    assert set(kar["history_items"][row][kar["history_items"][row] > 0]) == set(items[-5:])
    assert kar["user_fields"].shape[1] == 0 and full["user_fields"].shape[1] == 3
    # Genre shares of the kar tier: each item's first genre, averaged over its 5 items.
    first_genres = features.item_genres[items[-5:], 0]
    expected = np.bincount(first_genres, minlength=kar["history_genres"].shape[1]) / len(
        first_genres
    )
    np.testing.assert_allclose(kar["history_genres"][row], expected, atol=1e-6)
    ratings = features.inputs["train"]["history_ratings"][row][history[row] > 0]
    np.testing.assert_allclose(
        full["history_ratings"][row], np.bincount(ratings, minlength=6)[1:] / len(ratings)
    )
    has_history = (history > 0).any(axis=1)
    np.testing.assert_allclose(full["history_genres"][has_history].sum(axis=1), 1.0, atol=1e-5)
    assert (full["history_genres"][~has_history] == 0).all()


def test_indices_keep_the_shape_and_match_the_sample_inputs(real):
    split, features = real
    samples = split.samples["test"]
    items = samples["item_id"].to_numpy()[:12].reshape(3, 4)
    np.testing.assert_array_equal(
        features.indices(items, "item"), features.inputs["test"]["item"][:12].reshape(3, 4)
    )
    np.testing.assert_array_equal(
        features.indices(samples["user_id"].to_numpy()[:5], "user"),
        features.inputs["test"]["user"][:5],
    )
    assert features.indices(np.array(["no such item"]), "item").tolist() == [0]
