import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.target_attention import TargetAttention

QUERY = np.array([[1.0, 0.0]], "float32")
KEYS = np.array([[[2.0, 1.0], [5.0, 5.0]]], "float32")  # the second item is padding
MASK = np.array([[1.0, 0.0]], "float32")


def hand_set_layer(**kwargs):
    """Hidden relu units [sum(q * k), -sum(k)]; score 1.5 h0 + h1 + 0.25."""
    layer = TargetAttention(hidden_units=(2,), **kwargs)
    layer.build(QUERY.shape, KEYS.shape, MASK.shape)
    hidden = np.zeros((8, 2), "float32")  # rows: q (0, 1), k (2, 3), q - k (4, 5), q * k (6, 7)
    hidden[6:8, 0] = 1.0
    hidden[2:4, 1] = -1.0
    layer.set_weights(
        [
            hidden,
            np.zeros(2, "float32"),
            np.array([[1.5], [1.0]], "float32"),
            np.array([0.25], "float32"),
        ]
    )
    return layer


# item 0: q * k = [2, 0] -> relu([2, -3]) = [2, 0] -> 1.5 * 2 + 0.25 = 3.25
# item 1: q * k = [5, 0] -> relu([5, -10]) = [5, 0] -> 1.5 * 5 + 0.25 = 7.75
SCORES = (3.25, 7.75)


def test_padded_item_gets_no_weight_and_scores_are_not_normalised():
    got = keras.ops.convert_to_numpy(hand_set_layer()(QUERY, KEYS, MASK))
    np.testing.assert_allclose(got, [[3.25 * 2.0, 3.25 * 1.0]], rtol=1e-6)
    unmasked = keras.ops.convert_to_numpy(hand_set_layer()(QUERY, KEYS))
    np.testing.assert_allclose(unmasked, [[3.25 * 2 + 7.75 * 5, 3.25 * 1 + 7.75 * 5]], rtol=1e-6)


def test_softmax_spreads_over_the_unpadded_items_only():
    layer = hand_set_layer(use_softmax=True)
    masked = keras.ops.convert_to_numpy(layer(QUERY, KEYS, MASK))
    np.testing.assert_allclose(masked, KEYS[:, 0], rtol=1e-6)
    second = np.exp(7.75) / (np.exp(3.25) + np.exp(7.75))
    expected = (1 - second) * KEYS[0, 0] + second * KEYS[0, 1]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(QUERY, KEYS)), [expected], rtol=1e-5
    )


def test_keras_mask_on_the_keys_is_used():
    embedding = keras.layers.Embedding(4, 2, mask_zero=True)
    embedding.build((None, 2))
    embedding.set_weights([np.array([[5.0, 5.0], [2.0, 1.0], [0.0, 0.0], [0.0, 0.0]], "float32")])
    keys = embedding(np.array([[1, 0]]))  # id 0 is padding
    got = keras.ops.convert_to_numpy(hand_set_layer()(QUERY, keys))
    np.testing.assert_allclose(got, [[3.25 * 2.0, 3.25 * 1.0]], rtol=1e-6)


def test_layer_checks():
    rng = np.random.default_rng(1)
    mask = np.ones((3, 5), "float32")
    mask[:, 3:] = 0.0
    run_layer_test(
        TargetAttention,
        dict(hidden_units=(6, 3), activation="sigmoid", dropout=0.1),
        (
            rng.normal(size=(3, 4)).astype("float32"),
            rng.normal(size=(3, 5, 4)).astype("float32"),
            mask,
        ),
        expected_output_shape=(3, 4),
        expected_num_trainable_weights=6,
        expected_num_non_trainable_weights=0,
    )


def test_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    query, keys = (
        rng.normal(size=(3, 4)).astype("float32"),
        rng.normal(size=(3, 5, 4)).astype("float32"),
    )
    mask = (rng.random((3, 5)) < 0.6).astype("float32")
    inputs = [keras.Input((4,)), keras.Input((5, 4)), keras.Input((5,))]
    layer = TargetAttention(use_softmax=True, name="din")
    model = keras.Model(inputs, layer(*inputs))
    model.save(tmp_path / "din.keras")
    loaded = keras.saving.load_model(tmp_path / "din.keras")
    assert loaded.get_layer("din").get_config() == layer.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded([query, keys, mask])),
        keras.ops.convert_to_numpy(model([query, keys, mask])),
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_units=(8, 0)), "hidden_units must all be >= 1"),
        (dict(dropout=-0.1), r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TargetAttention(**kwargs)


def test_query_and_keys_must_share_the_width():
    with pytest.raises(ValueError, match="of the same E"):
        TargetAttention()(np.zeros((2, 3), "float32"), np.zeros((2, 4, 5), "float32"))
