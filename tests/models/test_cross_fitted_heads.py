import keras
import numpy as np
import pandas as pd
import pytest

import marc_keras
from marc_keras.models.cross_fitted_heads import CrossFittedHeads


def _task(users=24, items=10, dim=16, seed=0):
    # Users and items are random vectors; a user clicks items whose vector points their way.
    rng = np.random.default_rng(seed)
    user_ids = np.array([f"u{index:02d}" for index in range(users)])
    item_ids = np.array([f"i{index:02d}" for index in range(items)])
    user_vectors = rng.normal(size=(users, dim)).astype("float32")
    item_vectors = rng.normal(size=(items, dim)).astype("float32")
    rows = [
        (user, item, float(user_vectors[u] @ item_vectors[i] > 0))
        for u, user in enumerate(user_ids)
        for i, item in enumerate(item_ids)
    ]
    pairs = pd.DataFrame(rows, columns=["user_id", "item_id", "label"])
    training_users = user_ids[:16]
    return (
        (user_ids, user_vectors),
        (item_ids, item_vectors),
        pairs[pairs.user_id.isin(training_users)].reset_index(drop=True),
        pairs[~pairs.user_id.isin(training_users)].reset_index(drop=True),
        training_users,
    )


@pytest.fixture
def build_heads(make_tiny_backbone):
    def build():
        # The backbone (width 16) is never run: the heads read the given vectors.
        return marc_keras.MARC(
            make_tiny_backbone(lora_rank=0),
            compression=marc_keras.CompressionNetwork((8,), 4, name="compression"),
            matching=marc_keras.MatchingNetwork((8,), name="matching"),
            hsic_weight=0.1,
        )

    return build


def _heads(build, **kwargs):
    return CrossFittedHeads(build, epochs=2, batch_size=16, log=lambda line: None, **kwargs)


def _compress(model, vectors):
    return keras.ops.convert_to_numpy(model.compression(vectors, training=False))


def test_each_training_user_is_encoded_by_a_model_that_never_trained_on_its_pairs(build_heads):
    users, items, train, validation, training_users = _task()
    heads = _heads(build_heads, folds=4)
    result = heads.fit_transform(users, items, train, validation, training_users)
    fold = heads.fold_of(training_users)
    assert sorted(np.bincount(list(fold.values()))) == [4, 4, 4, 4]
    for user in training_users:
        k = result.encoded_by[user]
        assert k == fold[user]
        assert user not in set(result.trained_on[k])
        # Every other training user was in that model's pairs.
        assert set(result.trained_on[k]) == {u for u in training_users if fold[u] != k}
    # Items and users outside the training users: the all-folds model, one vector each.
    user_ids, user_vectors = users
    np.testing.assert_allclose(result.items[1], _compress(result.model, items[1]), atol=1e-6)
    outside = ~np.isin(user_ids, training_users)
    assert all(result.encoded_by[user] == -1 for user in user_ids[outside])
    np.testing.assert_allclose(
        result.users[1][outside], _compress(result.model, user_vectors[outside]), atol=1e-6
    )
    # Held-out rows differ from the all-folds model's (they were not fitted to those users).
    inside = ~outside
    assert not np.allclose(result.users[1][inside], _compress(result.model, user_vectors[inside]))
    assert len(result.validation_auc) == 5


def test_one_fold_is_the_plain_heads_and_fold_average_changes_only_outside_users(build_heads):
    users, items, train, validation, training_users = _task()
    plain = _heads(build_heads, folds=1).fit_transform(
        users, items, train, validation, training_users
    )
    np.testing.assert_allclose(plain.users[1], _compress(plain.model, users[1]), atol=1e-6)
    assert plain.trained_on == [] and set(plain.encoded_by.values()) == {-1}
    crossed = _heads(build_heads, folds=2).fit_transform(
        users, items, train, validation, training_users
    )
    averaged = _heads(build_heads, folds=2, holdout="fold-average").fit_transform(
        users, items, train, validation, training_users
    )
    inside = np.isin(users[0], training_users)
    np.testing.assert_allclose(averaged.users[1][inside], crossed.users[1][inside], atol=1e-5)
    assert not np.allclose(averaged.users[1][~inside], crossed.users[1][~inside])
    np.testing.assert_allclose(averaged.items[1], crossed.items[1], atol=1e-6)


def test_bad_settings_and_pairs_are_explained(build_heads):
    users, items, train, validation, training_users = _task()
    with pytest.raises(ValueError, match="folds must be a whole number >= 2"):
        CrossFittedHeads(build_heads, folds=0)
    with pytest.raises(ValueError, match="holdout must be one of all-folds, fold-average"):
        CrossFittedHeads(build_heads, holdout="mean")
    with pytest.raises(ValueError, match="cannot be split into 40 folds"):
        _heads(build_heads, folds=40).fit_transform(users, items, train, validation, training_users)
    with pytest.raises(ValueError, match="belong to users outside training_users"):
        _heads(build_heads, folds=2).fit_transform(
            users, items, pd.concat([train, validation]), validation, training_users
        )
    with pytest.raises(ValueError, match="pair item_id 'x' has no item vector"):
        broken = train.copy()
        broken.loc[0, "item_id"] = "x"
        _heads(build_heads, folds=2).fit_transform(users, items, broken, validation, training_users)
