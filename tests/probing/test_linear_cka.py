import numpy as np
import pytest

from marc_keras.probing.linear_cka import linear_cka


def _cka_from_gram_matrices(x, y):
    # Kornblith et al.'s definition: HSIC of the linear Gram matrices, normalised.
    n = len(x)
    centering = np.eye(n) - np.ones((n, n)) / n

    def hsic(first, second):
        return np.trace(first @ centering @ second @ centering)

    gram_x, gram_y = x @ x.T, y @ y.T
    return hsic(gram_x, gram_y) / np.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))


def test_linear_cka_equals_the_gram_matrix_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    y = x @ rng.normal(size=(6, 3)) + 0.5 * rng.normal(size=(40, 3))
    assert linear_cka(x, y) == pytest.approx(_cka_from_gram_matrices(x, y), rel=1e-10)


def test_rotation_scaling_and_shift_keep_cka_at_one_and_unrelated_data_is_near_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 5))) < 0.1


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(np.zeros((3, 2)), np.zeros((4, 2)))
