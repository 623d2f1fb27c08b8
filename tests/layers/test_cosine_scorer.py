import numpy as np
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.cosine_scorer import CosineScorer


def test_hand_computed_logits():
    scorer = CosineScorer(initial_scale=10.0)
    users = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]], "float32")
    items = np.array([[4.0, 3.0], [-2.0, 0.0], [1.0, 1.0]], "float32")
    scorer(users, items)
    scorer.bias.assign(0.5)
    # cosines 24/25, -1 and 0 (a zero vector), times 10, plus 0.5
    expected = [[10 * 0.96 + 0.5], [-10 + 0.5], [0.5]]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(scorer(users, items)), expected, rtol=1e-6
    )


def test_layer_checks():
    users, items = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    run_layer_test(
        CosineScorer,
        dict(initial_scale=5.0),
        (users, items),
        expected_output_shape=(3, 1),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        run_mixed_precision_test=False,
    )


def test_mixed_precision_logits_come_in_the_compute_dtype():
    users, items = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    run_layer_test(CosineScorer, dict(initial_scale=5.0), (users, items), run_saving_test=False)
