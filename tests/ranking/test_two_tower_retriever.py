import keras
import numpy as np
import pytest

from marc_keras.ranking.two_tower_retriever import ACCIDENTAL_HIT_LOGIT, TwoTowerRetriever

ITEMS, GENRES, USERS, HISTORY = 12, 4, 9, 3


def _model(vectors=True, **kwargs):
    rng = np.random.default_rng(0)
    sizes = dict(user_vector_dim=5, item_vector_dim=6, num_users=USERS) if vectors else {}
    model = TwoTowerRetriever(
        num_items=ITEMS, num_genres=GENRES, history_length=HISTORY, temperature=0.1, **sizes,
        **kwargs,
    )  # fmt: skip
    shares = np.zeros((ITEMS, GENRES), "float32")
    shares[np.arange(1, ITEMS), np.arange(1, ITEMS) % GENRES] = 1.0
    probability = rng.random(ITEMS) / ITEMS
    tables = (rng.normal(size=(USERS, 5)), rng.normal(size=(ITEMS, 6))) if vectors else (None, None)
    model.set_tables(shares, probability, *tables)
    return model, probability


def _batch(items):
    rng = np.random.default_rng(1)
    items = np.asarray(items, "int32")
    return {
        "user": rng.integers(1, USERS, len(items)).astype("int32"),
        "history": rng.integers(0, ITEMS, (len(items), HISTORY)).astype("int32"),
        "item": items,
    }


def test_logits_are_cosines_over_temperature_with_logq_and_accidental_hits_masked():
    model, probability = _model()
    batch = _batch([3, 5, 3, 7])  # items 3 twice: rows 0 and 2 are each other's accidental hit
    logits = keras.ops.convert_to_numpy(model(batch, training=False))
    queries = keras.ops.convert_to_numpy(model.encode_queries(batch))
    items = keras.ops.convert_to_numpy(model.encode_items(batch["item"]))
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    expected = queries @ items.T / 0.1 - np.log(probability[batch["item"]])[None, :]
    expected[0, 2] += ACCIDENTAL_HIT_LOGIT
    expected[2, 0] += ACCIDENTAL_HIT_LOGIT
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-3)


def test_training_moves_exactly_the_trainable_weights():
    model, _ = _model(adaptor_weight_decay=1e-3)
    tables = [model.item_genre_shares, model.item_id_index.rows, model.item_probability]
    tables += list(model.vector_tables.values())
    assert not {id(weight) for weight in tables} & {id(w) for w in model.trainable_weights}
    before = {weight.path: keras.ops.convert_to_numpy(weight).copy() for weight in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(_batch(np.arange(1, ITEMS)), batch_size=11, epochs=2, verbose=0)
    for weight in model.weights:
        changed = not np.array_equal(before[weight.path], keras.ops.convert_to_numpy(weight))
        assert changed == weight.trainable, weight.path


def test_cold_items_share_the_out_of_vocabulary_id():
    model, _ = _model(vectors=False)
    # Items 1 and 5 have the same genre (1 % 4 == 5 % 4): only their ids differ.
    warm = keras.ops.convert_to_numpy(model.encode_items(np.array([1, 5])))
    assert not np.allclose(warm[0], warm[1])
    model.set_tables(
        keras.ops.convert_to_numpy(model.item_genre_shares),
        np.full(ITEMS, 1 / ITEMS),
        cold_items=np.array([1, 5]),
    )
    cold = keras.ops.convert_to_numpy(model.encode_items(np.array([1, 5])))
    np.testing.assert_allclose(cold[0], cold[1], atol=1e-6)


def test_item_id_dropout_acts_in_training_only():
    model, _ = _model(vectors=False, item_id_dropout=0.9)
    items = np.arange(1, ITEMS)
    inference = keras.ops.convert_to_numpy(model.encode_items(items, training=False))
    twin, _ = _model(vectors=False)
    twin.set_weights(model.get_weights())
    np.testing.assert_allclose(
        inference, keras.ops.convert_to_numpy(twin.encode_items(items)), atol=1e-6
    )
    trained = keras.ops.convert_to_numpy(model.encode_items(items, training=True))
    assert not np.allclose(trained, inference)
    # History items lose their ids too: the query changes in training only.
    queries = {key: value for key, value in _batch(items).items() if key != "item"}
    query = keras.ops.convert_to_numpy(model.encode_queries(queries))
    np.testing.assert_allclose(
        query, keras.ops.convert_to_numpy(twin.encode_queries(queries)), atol=1e-6
    )
    assert not np.allclose(
        query, keras.ops.convert_to_numpy(model.encode_queries(queries, training=True))
    )
    with pytest.raises(ValueError, match="item_id_dropout"):
        TwoTowerRetriever(num_items=3, num_genres=2, history_length=2, item_id_dropout=1.0)


def test_config_round_trip_and_keras_file(tmp_path):
    model, _ = _model(item_id_dropout=0.5)
    batch = _batch([1, 2, 3])
    expected = keras.ops.convert_to_numpy(model(batch, training=False))
    restored = TwoTowerRetriever.from_config(model.get_config())
    assert restored.get_config() == model.get_config()
    path = tmp_path / "retriever.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(batch)), expected, atol=1e-5)


def test_vector_tables_come_in_pairs():
    with pytest.raises(ValueError, match="together"):
        TwoTowerRetriever(num_items=3, num_genres=2, history_length=2, user_vector_dim=4)
