import numpy as np
import pytest

from marc_keras.vector_standardization import standardize


def test_standardize_uses_the_reference_rows_statistics():
    reference = np.array([[1.0, 500.0, 2.0], [3.0, 506.0, 2.0], [5.0, 503.0, 2.0]])
    vectors = np.array([[3.0, 503.0, 9.0], [7.0, 500.0, 2.0]])
    # mean (3, 503, 2); population std (sqrt(8/3), sqrt(6), 0 -> 1)
    expected = np.array([[0.0, 0.0, 7.0], [4.0 / np.sqrt(8 / 3), -3.0 / np.sqrt(6), 0.0]])
    result = standardize(vectors, reference)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result[:, :2], expected[:, :2], rtol=1e-6)
    np.testing.assert_allclose(result[:, 2], [7.0, 0.0])


def test_standardize_refuses_an_empty_reference():
    with pytest.raises(ValueError, match="non-empty"):
        standardize(np.ones((2, 3)), np.ones((0, 3)))
