import numpy as np
import pytest

import keras
from marc_keras.ranking.list_metrics import list_metrics
from marc_keras.ranking.prm_reranker import PRMReranker, sinusoidal_positions


def kar_pos_embedding(max_len, d_emb):
    """KAR's `RS/models.py` PRM.get_pos_embedding, transcribed."""
    pos_enc = np.array(
        [
            [pos / np.power(10000, 2 * (j // 2) / d_emb) for j in range(d_emb)]
            if pos != 0
            else np.zeros(d_emb)
            for pos in range(max_len)
        ]
    )
    pos_enc[1:, 0::2] = np.sin(pos_enc[1:, 0::2])
    pos_enc[1:, 1::2] = np.cos(pos_enc[1:, 1::2])
    return pos_enc


def _inputs(rng, lists=4, length=5, items=12, users=3):
    return {
        "user": rng.integers(0, users, lists).astype("int32"),
        "items": rng.integers(1, items, (lists, length)).astype("int32"),
    }


def _reranker(with_vectors=True, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    vectors = dict(user_vector_dim=6, item_vector_dim=4, num_users=3) if with_vectors else {}
    model = PRMReranker(
        num_items=12,
        num_genres=3,
        list_length=5,
        embedding_dim=4,
        hidden_units=(8, 4),
        **vectors,
        **kwargs,
    )
    shares = rng.random((12, 3)).astype("float32")
    model.set_tables(
        shares,
        rng.normal(size=(3, 6)) if with_vectors else None,
        rng.normal(size=(12, 4)) if with_vectors else None,
    )
    return model, shares


def test_positions_are_kars():
    np.testing.assert_allclose(sinusoidal_positions(10, 96), kar_pos_embedding(10, 96), atol=1e-6)


# 2 lists hold 10 candidates, fewer than the 12 items: the adaptor sees the
# gathered item vectors; 4 lists hold 20: it projects the item table once.
@pytest.mark.parametrize("lists", [2, 4])
@pytest.mark.parametrize("with_vectors", [False, True])
def test_candidates_are_id_genre_and_vector_fields_plus_positions(with_vectors, lists):
    model, shares = _reranker(with_vectors)
    inputs = _inputs(np.random.default_rng(1), lists=lists)
    scores = keras.ops.convert_to_numpy(model(inputs))
    assert scores.shape == (lists, 5) and ((scores > 0) & (scores < 1)).all()
    items = inputs["items"]
    expected = [
        np.asarray(model.item_embedding.embeddings)[items],
        shares[items] @ np.asarray(model.genre_embedding.kernel),
    ]
    if with_vectors:
        users = np.asarray(model.vector_tables["user"])[inputs["user"]]
        pairs = np.concatenate(
            [np.repeat(users[:, None], 5, axis=1), np.asarray(model.vector_tables["item"])[items]],
            axis=-1,
        )
        field = keras.ops.convert_to_numpy(model.adaptor(pairs.reshape(-1, 10).astype("float32")))
        expected.append(field.reshape(lists, 5, 4))
    expected = np.concatenate(expected, axis=-1) + sinusoidal_positions(5, model.input_dim)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.candidates(inputs)), expected, atol=1e-5
    )


def test_keras_round_trip_keeps_the_scores(tmp_path):
    model, _ = _reranker()
    inputs = _inputs(np.random.default_rng(2))
    before = keras.ops.convert_to_numpy(model(inputs))
    model.save(tmp_path / "prm.keras")
    loaded = keras.saving.load_model(tmp_path / "prm.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(inputs)), before, atol=1e-6)
    assert loaded.get_config() == model.get_config()


def test_learns_to_put_a_genre_first():
    # Clicks are the candidates whose first genre share is highest: PRM must
    # learn to rank them up, far above a random order.
    model, shares = _reranker(with_vectors=False, seed=3)
    rng = np.random.default_rng(4)
    inputs = _inputs(rng, lists=512)
    labels = (shares[inputs["items"], 0] > 0.6).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    random_order = list_metrics(labels, rng.random(labels.shape), cutoffs=(1,))["map@1"]
    model.fit(inputs, labels, epochs=30, batch_size=64, verbose=0)
    after = list_metrics(labels, keras.ops.convert_to_numpy(model(inputs)), cutoffs=(1,))["map@1"]
    assert after > 0.9 and after > random_order + 0.2


def test_settings_that_cannot_work_are_errors():
    with pytest.raises(ValueError, match="user and item vector tables together"):
        PRMReranker(num_items=5, num_genres=2, user_vector_dim=4)
    with pytest.raises(ValueError, match="num_users"):
        PRMReranker(num_items=5, num_genres=2, user_vector_dim=4, item_vector_dim=4)
    with pytest.raises(ValueError, match="must divide into num_heads=3"):
        PRMReranker(num_items=5, num_genres=2, embedding_dim=4, num_heads=3)
