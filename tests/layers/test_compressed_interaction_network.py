import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.compressed_interaction_network import CompressedInteractionNetwork


def test_one_layer_of_one_map_by_hand():
    # F = 2 fields [1, 2] and [3, 4] (E = 2). Channels h * 2 + m hold x0_h * x0_m:
    # [1, 4], [3, 8], [3, 8], [9, 16].
    fields = np.array([[[1.0, 2.0], [3.0, 4.0]]], "float32")
    layer = CompressedInteractionNetwork((1,))
    layer.build(fields.shape)
    layer.set_weights(
        [np.array([[1.0], [0.0], [2.0], [-1.0]], "float32"), np.array([0.5], "float32")]
    )
    # per position: d0 = 1 + 2 * 3 - 9 + 0.5 = -1.5, d1 = 4 + 2 * 8 - 16 + 0.5 = 4.5; summed: 3
    got = keras.ops.convert_to_numpy(layer(fields))
    np.testing.assert_allclose(got, [[3.0]], rtol=1e-6)


def numpy_cin(x0, kernels, biases):
    """xDeepFM's CIN by its formula, one sum at a time."""
    batch, fields, dim = x0.shape
    x, pooled = x0, []
    for kernel, bias in zip(kernels, biases):
        maps = x.shape[1]
        nxt = np.zeros((batch, kernel.shape[1], dim))
        for n in range(kernel.shape[1]):
            for h in range(fields):
                for m in range(maps):
                    nxt[:, n] += kernel[h * maps + m, n] * x0[:, h] * x[:, m]
            nxt[:, n] += bias[n]
        x = nxt
        pooled.append(x.sum(axis=-1))
    return np.concatenate(pooled, axis=-1)


def test_two_layers_match_the_formula():
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(4, 3, 2)).astype("float32")
    layer = CompressedInteractionNetwork((2, 3))
    layer.build(fields.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    expected = numpy_cin(fields.astype("float64"), weights[0::2], weights[1::2])
    got = keras.ops.convert_to_numpy(layer(fields))
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_layer_checks():
    run_layer_test(
        CompressedInteractionNetwork,
        dict(layer_sizes=(4, 3)),
        np.random.default_rng(1).normal(size=(3, 4, 5)).astype("float32"),
        expected_output_shape=(3, 7),
        expected_num_trainable_weights=4,
        expected_num_non_trainable_weights=0,
    )


def test_keras_file_round_trip(tmp_path):
    fields = np.random.default_rng(2).normal(size=(3, 4, 5)).astype("float32")
    inputs = keras.Input((4, 5))
    model = keras.Model(inputs, CompressedInteractionNetwork((50, 50), name="cin")(inputs))
    model.save(tmp_path / "cin.keras")
    loaded = keras.saving.load_model(tmp_path / "cin.keras")
    assert loaded.get_layer("cin").layer_sizes == (50, 50)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(fields)), keras.ops.convert_to_numpy(model(fields))
    )


@pytest.mark.parametrize("sizes", [(), (8, 0)])
def test_bad_layer_sizes(sizes):
    with pytest.raises(ValueError, match="layer_sizes must be one or more sizes >= 1"):
        CompressedInteractionNetwork(sizes)
