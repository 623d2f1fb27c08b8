import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras
import keras


def test_hand_computed_forward_pass():
    layer = marc_keras.CompressionNetwork(hidden_units=(2,), output_dim=1)
    layer.build((None, 2))
    hidden_kernel = np.array([[1.0, -1.0], [2.0, 0.5]], "float32")
    output_kernel = np.array([[1.0], [3.0]], "float32")
    layer.set_weights(
        [hidden_kernel, np.array([0.0, 1.0], "float32"), output_kernel, np.array([0.5], "float32")]
    )
    x = np.array([[1.0, 1.0], [1.0, -2.0]], "float32")
    # hidden: relu([3, 0.5]) = [3, 0.5];  relu([-3, -1]) = [0, 0]
    expected = np.array([[3 * 1 + 0.5 * 3 + 0.5], [0.5]], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-6)


def test_default_is_paper_shape_256_to_128():
    layer = marc_keras.CompressionNetwork()
    assert layer(np.zeros((3, 384), "float32")).shape == (3, 128)
    assert [w.shape for w in layer.weights] == [(384, 256), (256,), (256, 128), (128,)]


def test_config_round_trip_and_bad_sizes():
    layer = marc_keras.CompressionNetwork((32, 16), 8, dropout=0.1)
    clone = marc_keras.CompressionNetwork.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="must be positive"):
        marc_keras.CompressionNetwork((0,), 8)
    with pytest.raises(ValueError, match="dropout must be in"):
        marc_keras.CompressionNetwork(dropout=1.5)


def test_layer_checks():
    inputs = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    run_layer_test(
        marc_keras.CompressionNetwork,
        dict(hidden_units=(8, 5), output_dim=4, dropout=0.1),
        inputs,
        expected_output_shape=(3, 4),
        expected_num_trainable_weights=6,
        expected_num_non_trainable_weights=0,
    )


def test_paper_shape_matches_numpy_relu_mlp():
    layer = marc_keras.CompressionNetwork()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 384)).astype("float32")
    kernel_1, bias_1, kernel_2, bias_2 = (
        rng.normal(0.0, 0.1, shape).astype("float32")
        for shape in ((384, 256), (256,), (256, 128), (128,))
    )
    layer.build((None, 384))
    layer.set_weights([kernel_1, bias_1, kernel_2, bias_2])
    expected = np.maximum(x @ kernel_1 + bias_1, 0.0) @ kernel_2 + bias_2
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
