import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.graph_interaction import GraphInteraction


def test_message_step_of_two_fields_by_hand():
    # With two fields and no self-loops each field hears only the other one,
    # whatever the attention kernel: the graph is [[0, 1], [1, 0]].
    fields = np.array([[[1.0, 2.0], [0.0, -1.0]]], "float32")
    layer = GraphInteraction(num_layers=1, use_gru=False)
    layer.build(fields.shape)
    eye = np.eye(2, dtype="float32")
    shear = np.array([[1.0, 1.0], [0.0, 1.0]], "float32")  # [a, b] @ shear = [a, a + b]
    swap = np.array([[0.0, 1.0], [1.0, 0.0]], "float32")
    attention = np.array([[3.0], [-1.0], [2.0], [0.5]], "float32")
    layer.set_weights(
        [attention, np.stack([eye, shear]), np.stack([swap, eye]), np.array([0.5, 0.0], "float32")]
    )
    # W_out: field 0 sends [1, 2], field 1 sends [0, -1] @ shear = [0, -1].
    # W_in: field 0 gets [0, -1] @ swap = [-1, 0], field 1 gets [1, 2]; bias [0.5, 0].
    messages = np.array([[-0.5, 0.0], [1.5, 2.0]])
    expected = messages + fields[0] + fields[0]  # state update h + m, then the residual e
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(fields)), [expected], rtol=1e-6)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_fignn(fields, attention, kernel_out, kernel_in, bias, gru, steps):
    """FiGNN by its formulas, one field and one step at a time, Keras' GRU gate order."""
    _, num_fields, dim = fields.shape
    kernel, recurrent, gru_bias = gru
    out = np.zeros_like(fields)
    for b in range(fields.shape[0]):
        e = fields[b]
        logits = np.full((num_fields, num_fields), -np.inf)
        for i in range(num_fields):
            for j in range(num_fields):
                if i != j:
                    z = np.concatenate([e[i], e[j]]) @ attention[:, 0]
                    logits[i, j] = z if z > 0 else 0.01 * z
        graph = np.exp(logits - logits.max(1, keepdims=True))
        graph /= graph.sum(1, keepdims=True)
        state = e.copy()
        for _ in range(steps):
            sent = np.stack([state[j] @ kernel_out[j] for j in range(num_fields)])
            message = np.stack([(graph[i] @ sent) @ kernel_in[i] + bias for i in range(num_fields)])
            x = message @ kernel + gru_bias[0]
            r_h = state @ recurrent + gru_bias[1]
            update = sigmoid(x[:, :dim] + r_h[:, :dim])
            reset = sigmoid(x[:, dim : 2 * dim] + r_h[:, dim : 2 * dim])
            candidate = np.tanh(x[:, 2 * dim :] + reset * r_h[:, 2 * dim :])
            state = update * state + (1 - update) * candidate + e
        out[b] = state
    return out


def test_attention_graph_and_gru_steps_match_the_formulas():
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(2, 3, 2))
    layer = GraphInteraction()  # two steps through one reused graph layer
    layer.build(fields.shape)
    weights = [rng.normal(size=w.shape) * 0.5 for w in layer.get_weights()]
    layer.set_weights([w.astype("float32") for w in weights])
    expected = numpy_fignn(fields, *weights[:4], weights[4:], steps=2)
    got = keras.ops.convert_to_numpy(layer(fields.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, trainable",
    [({}, 7), (dict(num_layers=3, reuse_graph_layer=False, use_gru=False), 10)],
)
def test_layer_checks(kwargs, trainable):
    run_layer_test(
        GraphInteraction,
        kwargs,
        np.random.default_rng(1).normal(size=(3, 4, 5)).astype("float32"),
        expected_output_shape=(3, 4, 5),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
    )


def test_keras_file_round_trip(tmp_path):
    fields = np.random.default_rng(2).normal(size=(3, 4, 5)).astype("float32")
    inputs = keras.Input((4, 5))
    layer = GraphInteraction(num_layers=2, reuse_graph_layer=False, name="fignn")
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "fignn.keras")
    loaded = keras.saving.load_model(tmp_path / "fignn.keras")
    assert loaded.get_layer("fignn").get_config() == layer.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(fields)), keras.ops.convert_to_numpy(model(fields))
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_layers must be at least 1"):
        GraphInteraction(num_layers=0)
    with pytest.raises(ValueError, match="F >= 2"):
        GraphInteraction()(np.zeros((2, 1, 4), "float32"))
