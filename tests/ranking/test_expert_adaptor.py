import numpy as np
import pytest
import torch
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.ranking.expert_adaptor import ExpertAdaptor


def test_hand_computed_mixture():
    adaptor = ExpertAdaptor(num_experts=2, hidden_units=(1,), output_dim=1)
    adaptor.build((None, 1))
    # expert 0: relu(x) * 1;  expert 1: relu(x) * 3;  gate logits [0, 0] -> 0.5 each
    weights = []
    for scale in (1.0, 3.0):
        weights += [np.ones((1, 1)), np.zeros(1), np.array([[scale]]), np.zeros(1)]
    weights += [np.zeros((1, 2)), np.zeros(2)]
    adaptor.set_weights([w.astype("float32") for w in weights])
    out = keras.ops.convert_to_numpy(adaptor(np.array([[2.0], [-1.0]], "float32")))
    np.testing.assert_allclose(out, [[0.5 * 2 + 0.5 * 6], [0.0]], rtol=1e-6)


def test_config_round_trip_and_shape():
    adaptor = ExpertAdaptor(num_experts=4, hidden_units=(64,), output_dim=16)
    assert tuple(adaptor(np.zeros((3, 384), "float32")).shape) == (3, 16)
    assert ExpertAdaptor.from_config(adaptor.get_config()).get_config() == adaptor.get_config()


def test_layer_checks():
    vectors = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    run_layer_test(
        ExpertAdaptor,
        dict(num_experts=3, hidden_units=(8,), output_dim=4),
        vectors,
        expected_output_shape=(3, 4),
        # 3 experts x (hidden kernel, bias, output kernel, bias) + the gate's kernel, bias
        expected_num_trainable_weights=14,
        expected_num_non_trainable_weights=0,
    )


def _identity_adaptor(dim, **settings):
    # Two linear experts (no hidden layer) with identity kernels: whatever the
    # gate weighs, the output is the (noised, dropped) input, so the
    # regularisers can be read off it.
    adaptor = ExpertAdaptor(num_experts=2, hidden_units=(), output_dim=dim, seed=3, **settings)
    adaptor.build((None, dim))
    for expert in adaptor.experts:
        expert[0].kernel.assign(np.eye(dim, dtype="float32"))
    return adaptor


def test_noise_is_scaled_to_each_dimension_std_of_the_adapted_vectors():
    rng = np.random.default_rng(0)
    training = rng.normal(size=(5000, 2)) * np.array([1.0, 10.0])
    adaptor = _identity_adaptor(2, input_noise=0.5)
    adaptor.adapt(training)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(adaptor.input_std), training.std(axis=0), rtol=1e-5
    )
    x = np.ones((20000, 2), "float32")
    noise = keras.ops.convert_to_numpy(adaptor(x, training=True)) - x
    expected_std = 0.5 * training.std(axis=0)
    # Means within 4 standard errors of zero, stds within 3%.
    assert np.all(np.abs(noise.mean(axis=0)) < 4 * expected_std / np.sqrt(len(x)))
    np.testing.assert_allclose(noise.std(axis=0), expected_std, rtol=0.03)


def test_input_dropout_drops_and_rescales_in_training():
    adaptor = _identity_adaptor(4, input_dropout=0.5)
    x = np.full((5000, 4), 2.0, "float32")
    out = keras.ops.convert_to_numpy(adaptor(x, training=True))
    dropped = out == 0.0
    np.testing.assert_allclose(out[~dropped], 4.0, rtol=1e-6)  # kept values scaled by 1 / 0.5
    assert abs(dropped.mean() - 0.5) < 0.02


REGULARISED = dict(input_dropout=0.3, expert_dropout=0.4, input_noise=0.5, weight_decay=1e-3)


def test_regularisers_act_only_in_training():
    vectors = np.random.default_rng(1).normal(size=(64, 6)).astype("float32")
    plain = ExpertAdaptor(num_experts=2, hidden_units=(8,), output_dim=4)
    regularised = ExpertAdaptor(num_experts=2, hidden_units=(8,), output_dim=4, **REGULARISED)
    plain(vectors)
    regularised.adapt(vectors)
    for target, source in zip(regularised.trainable_weights, plain.trainable_weights):
        target.assign(source)
    inference = [keras.ops.convert_to_numpy(regularised(vectors, training=False)) for _ in "ab"]
    np.testing.assert_array_equal(inference[0], inference[1])
    np.testing.assert_allclose(inference[0], keras.ops.convert_to_numpy(plain(vectors)), atol=1e-6)
    trained = [keras.ops.convert_to_numpy(regularised(vectors, training=True)) for _ in "ab"]
    assert not np.allclose(trained[0], trained[1])
    assert not np.allclose(trained[0], inference[0])


def test_weight_decay_is_an_l2_penalty_on_every_kernel():
    adaptor = ExpertAdaptor(num_experts=2, hidden_units=(3,), output_dim=2, weight_decay=1e-3)
    adaptor(np.ones((2, 5), "float32"))
    kernels = [
        keras.ops.convert_to_numpy(weight)
        for weight in adaptor.trainable_weights
        if weight.path.endswith("kernel")
    ]
    assert len(kernels) == 5  # 2 experts x (hidden, output) + the gate
    expected = 1e-3 * sum(float((kernel**2).sum()) for kernel in kernels)
    penalty = sum(float(keras.ops.convert_to_numpy(loss)) for loss in adaptor.losses)
    assert penalty == pytest.approx(expected, rel=1e-5)
    assert ExpertAdaptor(num_experts=2).losses == []


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(input_dropout=1.0), "input_dropout must be in \\[0, 1\\)"),
        (dict(expert_dropout=-0.1), "expert_dropout must be in \\[0, 1\\)"),
        (dict(input_noise=-1.0), "input_noise must be >= 0"),
        (dict(weight_decay=-1.0), "weight_decay must be >= 0"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        ExpertAdaptor(**settings)


def test_layer_checks_with_every_regulariser():
    vectors = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    run_layer_test(
        ExpertAdaptor,
        dict(num_experts=3, hidden_units=(8,), output_dim=4, seed=1, **REGULARISED),
        vectors,
        prepare=lambda adaptor: adaptor.adapt(np.random.default_rng(2).normal(size=(50, 6)) * 3),
        expected_output_shape=(3, 4),
        expected_num_trainable_weights=14,
        # the noise scale (input_std)
        expected_num_non_trainable_weights=1,
    )


def test_expert_dropout_takes_training_from_the_call():
    vectors = np.random.default_rng(4).normal(size=(64, 6)).astype("float32")
    adaptor = ExpertAdaptor(num_experts=2, hidden_units=(16,), output_dim=4, expert_dropout=0.5)
    inference = keras.ops.convert_to_numpy(adaptor(vectors, training=False))
    np.testing.assert_array_equal(inference, keras.ops.convert_to_numpy(adaptor(vectors)))
    trained = keras.ops.convert_to_numpy(adaptor(vectors, training=True))
    assert not np.allclose(trained, inference)


@pytest.mark.parametrize(
    "settings",
    [dict(hidden_units=(8, 4)), dict(hidden_units=(), expert_dropout=0.0), dict(input_dropout=0.5)],
)
def test_call_shared_equals_call_on_each_concatenated_row(settings):
    rng = np.random.default_rng(3)
    adaptor = ExpertAdaptor(num_experts=3, output_dim=5, **settings)
    adaptor.build((None, 7))
    adaptor.set_weights([rng.normal(size=w.shape).astype("float32") for w in adaptor.weights])
    shared = rng.normal(size=(4, 3)).astype("float32")
    rows = rng.normal(size=(4, 6, 4)).astype("float32")
    pairs = np.concatenate([np.repeat(shared[:, None], 6, axis=1), rows], axis=-1)  # (4, 6, 7)
    expected = keras.ops.convert_to_numpy(adaptor(pairs.reshape(-1, 7), training=False))
    got = keras.ops.convert_to_numpy(adaptor.call_shared(shared, rows, training=False))
    assert got.shape == (4, 6, 5)
    np.testing.assert_allclose(got, expected.reshape(4, 6, 5), rtol=1e-5, atol=1e-5)
    # The same rows as a (24, 4) table and the (4, 6) indices that pick them back.
    indices = rng.permutation(24)
    table = np.empty((24, 4), "float32")
    table[indices] = rows.reshape(-1, 4)
    from_table = adaptor.call_shared(
        shared, table, training=False, row_indices=indices.reshape(4, 6)
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_table), got, rtol=1e-5, atol=1e-5)


def test_call_shared_gradients_match_call():
    rng = np.random.default_rng(4)
    adaptor = ExpertAdaptor(num_experts=2, hidden_units=(6,), output_dim=3)
    adaptor.build((None, 5))
    shared = keras.ops.convert_to_tensor(rng.normal(size=(2, 2)).astype("float32"))
    rows = keras.ops.convert_to_tensor(rng.normal(size=(2, 4, 3)).astype("float32"))
    pairs = keras.ops.concatenate(
        [keras.ops.broadcast_to(shared[:, None], (2, 4, 2)), rows], axis=-1
    )

    def gradients(output):
        return torch.autograd.grad((output**2).sum(), [w.value for w in adaptor.trainable_weights])

    split = gradients(adaptor.call_shared(shared, rows))
    joined = gradients(adaptor(keras.ops.reshape(pairs, (-1, 5))))
    table = gradients(
        adaptor.call_shared(
            shared, keras.ops.reshape(rows, (8, 3)), row_indices=np.arange(8).reshape(2, 4)
        )
    )
    for a, b, c in zip(split, joined, table):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
