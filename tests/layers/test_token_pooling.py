import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras
import keras

HIDDEN = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)  # (B=2, T=4, d=3)
RIGHT_PADDED = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])


@pytest.mark.parametrize(
    "mode, mask, expected",
    [
        ("mean", RIGHT_PADDED, [HIDDEN[0, :3].mean(0), HIDDEN[1, :2].mean(0)]),
        ("last", RIGHT_PADDED, [HIDDEN[0, 2], HIDDEN[1, 1]]),
        ("last", np.array([[0, 1, 1, 1], [0, 0, 1, 1]]), [HIDDEN[0, 3], HIDDEN[1, 3]]),
        ("last", np.ones((2, 4)), [HIDDEN[0, 3], HIDDEN[1, 3]]),
        ("cls", RIGHT_PADDED, [HIDDEN[0, 0], HIDDEN[1, 0]]),
    ],
)
def test_pools_as_computed_by_hand(mode, mask, expected):
    pooled = marc_keras.TokenPooling(mode)(HIDDEN, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), np.array(expected), rtol=1e-6)


def test_pooling_typo_names_the_options_and_suggests():
    with pytest.raises(
        ValueError, match="Unknown pooling 'maen'.*mean, last, cls.*Did you mean 'mean'"
    ):
        marc_keras.TokenPooling("maen")


def test_config_round_trip():
    layer = marc_keras.TokenPooling("last", name="pool")
    clone = marc_keras.TokenPooling.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("mode", ["mean", "last", "cls"])
def test_layer_checks(mode):
    hidden = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    run_layer_test(
        marc_keras.TokenPooling,
        dict(mode=mode),
        (hidden, RIGHT_PADDED.astype("int32")),
        expected_output_shape=(2, 3),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
    )
