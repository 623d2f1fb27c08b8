import itertools

import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.senet_bilinear import SenetBilinear


def test_three_fields_identity_bilinear_by_hand():
    fields = np.array([[[1.0, 3.0], [2.0, 0.0], [-1.0, -3.0]]], "float32")  # means z = [2, 1, -2]
    layer = SenetBilinear()  # reduction_ratio 0.5: excitation 3 -> 6 -> 3
    layer.build(fields.shape)
    eye = np.eye(3, dtype="float32")
    # relu([z, -z]) @ [I; I] = |z|, and relu(|z|) = |z| = [2, 1, 2]
    layer.set_weights([np.hstack([eye, -eye]), np.vstack([eye, eye]), np.eye(2, dtype="float32")])
    # SENET fields: [2, 6], [2, 0], [-2, -6]
    p = [[1 * 2, 3 * 0], [1 * -1, 3 * -3], [2 * -1, 0 * -3]]  # pairs (0, 1), (0, 2), (1, 2)
    q = [[2 * 2, 6 * 0], [2 * -2, 6 * -6], [2 * -2, 0 * -6]]
    expected = np.array([p + q], "float32").reshape(1, -1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(fields)), expected, rtol=1e-6)


def test_bilinear_kernel_multiplies_the_left_field_from_the_right():
    fields = np.array([[[1.0, 2.0], [3.0, 5.0]]], "float32")
    layer = SenetBilinear(reduction_ratio=1.0)
    layer.build(fields.shape)
    swap_scale = np.array([[0.0, 1.0], [10.0, 0.0]], "float32")
    layer.set_weights([np.eye(2, dtype="float32")] * 2 + [swap_scale])
    # e0 @ W = [20, 1]; times e1: [60, 5]. SENET: z = [1.5, 4], so e0 * 1.5 and e1 * 4:
    # [30, 1.5] * [12, 20] = [360, 30].
    expected = [[60.0, 5.0, 360.0, 30.0]]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(fields)), expected, rtol=1e-6)


def numpy_senet_bilinear(fields, excitation, kernels, bilinear_type):
    """FiBiNet by its formulas: SENET, then (e_i W) * e_j over the pairs i < j."""

    def bilinear(e, kernel):
        out = []
        for pair, (i, j) in enumerate(itertools.combinations(range(e.shape[1]), 2)):
            index = {"field_each": i, "field_interaction": pair}.get(bilinear_type)
            w = kernel if index is None else kernel[index]
            out.append((e[:, i] @ w) * e[:, j])
        return np.concatenate(out, axis=-1)

    weight = np.maximum(np.maximum(fields.mean(-1) @ excitation[0], 0) @ excitation[1], 0)
    senet = fields * weight[:, :, None]
    return np.concatenate([bilinear(fields, kernels[0]), bilinear(senet, kernels[-1])], axis=-1)


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
@pytest.mark.parametrize("share_bilinear", [True, False])
def test_bilinear_types_match_the_formulas(bilinear_type, share_bilinear):
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(3, 4, 3)).astype("float32")
    layer = SenetBilinear(bilinear_type=bilinear_type, share_bilinear=share_bilinear)
    layer.build(fields.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    expected = numpy_senet_bilinear(fields, weights[:2], weights[2:], bilinear_type)
    got = keras.ops.convert_to_numpy(layer(fields))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, trainable",
    [({}, 3), (dict(bilinear_type="field_interaction", share_bilinear=False), 4)],
)
def test_layer_checks(kwargs, trainable):
    run_layer_test(
        SenetBilinear,
        kwargs,
        np.random.default_rng(1).normal(size=(3, 4, 5)).astype("float32"),
        expected_output_shape=(3, 2 * 6 * 5),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
    )


def test_keras_file_round_trip(tmp_path):
    fields = np.random.default_rng(2).normal(size=(3, 4, 5)).astype("float32")
    inputs = keras.Input((4, 5))
    layer = SenetBilinear(bilinear_type="field_each", excitation_activation="sigmoid", name="fibi")
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "fibi.keras")
    loaded = keras.saving.load_model(tmp_path / "fibi.keras")
    assert loaded.get_layer("fibi").get_config() == layer.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(fields)), keras.ops.convert_to_numpy(model(fields))
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reduction_ratio=0.0), "reduction_ratio must be > 0"),
        (dict(bilinear_type="field_al"), "bilinear_type must be one of .*Did you mean 'field_all'"),
        (dict(bilinear_type="pairwise"), "bilinear_type must be one of field_all, field_each"),
        (dict(excitation_activation="tanh"), "excitation_activation must be one of relu, sigmoid"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SenetBilinear(**kwargs)


def test_needs_two_fields():
    with pytest.raises(ValueError, match="F >= 2"):
        SenetBilinear()(np.zeros((2, 1, 4), "float32"))
