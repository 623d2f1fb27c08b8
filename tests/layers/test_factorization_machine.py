import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.factorization_machine import FactorizationMachine


def test_two_fields_give_their_inner_product():
    fields = np.array(
        [
            [[1.0, 2.0], [3.0, -1.0]],  # 1 * 3 + 2 * -1 = 1
            [[2.0, 1.0], [-1.0, 4.0]],  # 2 * -1 + 1 * 4 = 2
        ],
        "float32",
    )
    got = keras.ops.convert_to_numpy(FactorizationMachine()(fields))
    np.testing.assert_allclose(got, [[1.0], [2.0]], rtol=1e-6)


def test_matches_the_sum_over_field_pairs():
    fields = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
    expected = np.zeros((3, 1))
    for i in range(4):
        for j in range(i + 1, 4):
            expected[:, 0] += (fields[:, i] * fields[:, j]).sum(axis=-1)
    got = keras.ops.convert_to_numpy(FactorizationMachine()(fields))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_layer_checks():
    run_layer_test(
        FactorizationMachine,
        {},
        np.random.default_rng(1).normal(size=(3, 4, 5)).astype("float32"),
        expected_output_shape=(3, 1),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
    )


def test_keras_file_round_trip(tmp_path):
    fields = np.random.default_rng(2).normal(size=(3, 4, 5)).astype("float32")
    inputs = keras.Input((4, 5))
    model = keras.Model(inputs, FactorizationMachine(name="fm")(inputs))
    model.save(tmp_path / "fm.keras")
    loaded = keras.saving.load_model(tmp_path / "fm.keras")
    assert isinstance(loaded.get_layer("fm"), FactorizationMachine)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(fields)), keras.ops.convert_to_numpy(model(fields))
    )


def test_needs_field_embeddings():
    with pytest.raises(ValueError, match=r"\(B, F, E\) field embeddings"):
        FactorizationMachine()(np.zeros((3, 4), "float32"))
