import numpy as np
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
