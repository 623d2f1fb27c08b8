import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.cross_network import CrossNetwork


def test_hand_computed_two_layers():
    layer = CrossNetwork(2)
    layer.build((None, 2))
    # layer 0: w = [1, 0], b = [0, 1]; layer 1: w = [0, 1], b = [0, 0]
    layer.set_weights(
        [
            np.array([[1.0], [0.0]], "float32"),
            np.array([[0.0], [1.0]], "float32"),
            np.array([0.0, 1.0], "float32"),
            np.zeros(2, "float32"),
        ]
    )
    x0 = np.array([[2.0, 3.0]], "float32")
    # x1 = x0 * (x0 . [1, 0]) + [0, 1] + x0 = [4, 6] + [0, 1] + [2, 3] = [6, 10]
    # x2 = x0 * (x1 . [0, 1]) + 0 + x1 = [20, 30] + [6, 10] = [26, 40]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x0)), [[26.0, 40.0]])


def test_numpy_reference_with_random_weights():
    rng = np.random.default_rng(0)
    layer = CrossNetwork(3)
    x0 = rng.normal(size=(5, 7)).astype("float32")
    layer.build(x0.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    layer.set_weights(weights)
    kernels, biases = weights[:3], weights[3:]
    x = x0.astype("float64")
    for kernel, bias in zip(kernels, biases):
        x = x0 * (x @ kernel) + bias + x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x0)), x, rtol=1e-4)


def test_layer_checks():
    run_layer_test(
        CrossNetwork,
        dict(num_layers=3),
        np.random.default_rng(1).normal(size=(4, 6)).astype("float32"),
        expected_output_shape=(4, 6),
        expected_num_trainable_weights=6,
        expected_num_non_trainable_weights=0,
    )


def test_keras_round_trip(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, CrossNetwork(2)(inputs))
    x = np.random.default_rng(2).normal(size=(3, 5)).astype("float32")
    model.save(tmp_path / "cross.keras")
    loaded = keras.saving.load_model(tmp_path / "cross.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_bad_layer_count_is_named():
    with pytest.raises(ValueError, match="num_layers"):
        CrossNetwork(0)
