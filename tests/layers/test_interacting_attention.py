import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.interacting_attention import InteractingAttention

# Two fields e0 = [1, 0], e1 = [0, -2]; with identity projections q = k = v = e.
FIELDS = np.array([[[1.0, 0.0], [0.0, -2.0]]], "float32")


def identity_layer(**kwargs):
    layer = InteractingAttention(**kwargs)
    layer.build(FIELDS.shape)
    layer.set_weights([np.eye(2, dtype="float32")] * 3)
    return layer


def test_one_head_identity_projections_by_hand():
    # logits e e^T = [[1, 0], [0, 4]]
    a = np.exp(1.0) / (np.exp(1.0) + 1.0)  # field 0's weight on itself
    b = np.exp(4.0) / (np.exp(4.0) + 1.0)  # field 1's weight on itself
    out_0 = [a * 1.0 + 1.0, (1 - a) * -2.0 + 0.0]  # attention + residual
    out_1 = [(1 - b) * 1.0 + 0.0, b * -2.0 - 2.0]
    expected = np.maximum([[out_0, out_1]], 0.0)  # relu: [[1 + a, 0], [1 - b, 0]]
    got = keras.ops.convert_to_numpy(identity_layer(attention_dim=2)(FIELDS))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_scale_divides_the_logits_by_root_attention_dim():
    a = np.exp(1.0 / np.sqrt(2.0)) / (np.exp(1.0 / np.sqrt(2.0)) + 1.0)
    b = np.exp(4.0 / np.sqrt(2.0)) / (np.exp(4.0 / np.sqrt(2.0)) + 1.0)
    expected = [[[1.0 + a, 0.0], [1.0 - b, 0.0]]]
    layer = identity_layer(attention_dim=2, use_scale=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(FIELDS)), expected, rtol=1e-6)


def test_two_heads_of_one_feature_each():
    # Head 0 sees feature 0 ([1, 0] over the fields), head 1 feature 1 ([0, -2]).
    a = np.exp(1.0) / (np.exp(1.0) + 1.0)  # head 0, field 0: logits [1, 0]
    b = np.exp(4.0) / (np.exp(4.0) + 1.0)  # head 1, field 1: logits [0, 4]
    head_0 = [a * 1.0, 0.5 * 1.0]  # field 1's logits [0, 0]
    head_1 = [0.5 * -2.0, b * -2.0]  # field 0's logits [0, 0]
    expected = np.maximum(
        [[[head_0[0] + 1.0, head_1[0] + 0.0], [head_0[1] + 0.0, head_1[1] - 2.0]]], 0.0
    )
    layer = identity_layer(attention_dim=1, num_heads=2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(FIELDS)), expected, rtol=1e-6)


def test_residual_is_projected_when_the_width_changes():
    layer = InteractingAttention(attention_dim=3)
    layer.build(FIELDS.shape)
    zeros = np.zeros((2, 3), "float32")
    residual = np.array([[1.0, -1.0, 2.0], [0.0, 1.0, 0.0]], "float32")
    layer.set_weights([zeros, zeros, zeros, residual])  # attention output 0: relu(e @ W_res)
    expected = np.maximum(FIELDS @ residual, 0.0)  # [[1, -1, 2], [0, -2, 0]] -> relu
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(FIELDS)), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, trainable",
    [
        (dict(attention_dim=4, num_heads=2, use_scale=True, dropout=0.1), 4),
        (dict(attention_dim=5), 3),
        (dict(attention_dim=4, use_residual=False), 3),
    ],
)
def test_layer_checks(kwargs, trainable):
    run_layer_test(
        InteractingAttention,
        kwargs,
        np.random.default_rng(1).normal(size=(3, 4, 5)).astype("float32"),
        expected_output_shape=(3, 4, kwargs.get("num_heads", 1) * kwargs["attention_dim"]),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
    )


def test_keras_file_round_trip(tmp_path):
    fields = np.random.default_rng(2).normal(size=(3, 4, 5)).astype("float32")
    inputs = keras.Input((4, 5))
    layer = InteractingAttention(attention_dim=8, num_heads=2, use_scale=True, name="autoint")
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "autoint.keras")
    loaded = keras.saving.load_model(tmp_path / "autoint.keras")
    assert loaded.get_layer("autoint").get_config() == layer.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(fields)), keras.ops.convert_to_numpy(model(fields))
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attention_dim=0), "attention_dim must be at least 1"),
        (dict(num_heads=0), "num_heads must be at least 1"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InteractingAttention(**kwargs)
