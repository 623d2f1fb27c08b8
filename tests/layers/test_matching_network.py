import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras
import keras


def test_hand_computed_logit_uses_explicit_interactions():
    layer = marc_keras.MatchingNetwork(hidden_units=(1,))
    layer.build((None, 2), (None, 2))
    # The hidden unit reads only the interaction part [c_u * c_i].
    hidden_kernel = np.array([[0], [0], [0], [0], [1], [1]], "float32")
    layer.set_weights(
        [
            hidden_kernel,
            np.zeros(1, "float32"),
            np.array([[2.0]], "float32"),
            np.array([-1.0], "float32"),
        ]
    )
    users = np.array([[1.0, 2.0], [1.0, -3.0]], "float32")
    items = np.array([[3.0, 1.0], [1.0, 1.0]], "float32")
    # interactions: [3, 2] -> 5 -> 2*5-1 = 9;  [1, -3] -> relu(-2) = 0 -> -1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(users, items)), [[9.0], [-1.0]])


def test_without_interactions_reads_only_the_concatenation():
    layer = marc_keras.MatchingNetwork((4,), explicit_interactions=False)
    layer.build((None, 3), (None, 3))
    assert layer.weights[0].shape == (6, 4)


def test_mismatched_widths_are_refused():
    with pytest.raises(ValueError, match="same width.*got 4 and 8"):
        marc_keras.MatchingNetwork()(np.ones((2, 4), "float32"), np.ones((2, 8), "float32"))


def test_config_round_trip():
    layer = marc_keras.MatchingNetwork((64, 32), explicit_interactions=False, dropout=0.2)
    assert (
        marc_keras.MatchingNetwork.from_config(layer.get_config()).get_config()
        == layer.get_config()
    )


def test_without_interactions_matches_numpy():
    layer = marc_keras.MatchingNetwork((4,), explicit_interactions=False)
    layer.build((None, 3), (None, 3))
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    layer.set_weights(weights)
    users, items = rng.normal(size=(2, 5, 3)).astype("float32")
    hidden_kernel, hidden_bias, output_kernel, output_bias = weights
    hidden = np.maximum(np.concatenate([users, items], 1) @ hidden_kernel + hidden_bias, 0.0)
    expected = hidden @ output_kernel + output_bias
    got = keras.ops.convert_to_numpy(layer(users, items))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("explicit_interactions", [True, False])
def test_layer_checks(explicit_interactions):
    users, items = np.random.default_rng(1).normal(size=(2, 3, 4)).astype("float32")
    run_layer_test(
        marc_keras.MatchingNetwork,
        dict(hidden_units=(8,), explicit_interactions=explicit_interactions, dropout=0.1),
        (users, items),
        expected_output_shape=(3, 1),
        expected_num_trainable_weights=4,
        expected_num_non_trainable_weights=0,
    )
