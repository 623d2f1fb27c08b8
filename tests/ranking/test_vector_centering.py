import numpy as np
import pytest

from marc_keras.ranking.vector_centering import center


def test_center_subtracts_the_reference_mean_and_keeps_ordinary_dimensions():
    reference = np.array([[1.0, 500.0, 2.0], [3.0, 506.0, 2.0], [5.0, 503.0, 2.0]])
    vectors = np.array([[3.0, 503.0, 9.0], [7.0, 500.0, 2.0]])
    # mean (3, 503, 2); stds (1.63, 2.45, 0): median 1.63, no std above 4x it
    result = center(vectors, reference)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, [[0.0, 0.0, 7.0], [4.0, -3.0, 0.0]])


def test_center_scales_an_outlier_dimension_down_to_the_bound():
    rng = np.random.default_rng(0)
    reference = np.column_stack(
        [
            rng.normal(0, 1, 1000),
            rng.normal(0, 1, 1000),
            rng.normal(0, 1, 1000),
            rng.normal(500, 100, 1000),
        ]
    )
    result = center(reference, reference, max_std_ratio=4.0)
    stds = reference.std(axis=0)
    bound = 4.0 * np.median(stds)
    np.testing.assert_allclose(result.std(axis=0), [*stds[:3], bound], rtol=1e-5)
    np.testing.assert_allclose(
        result[:, 3], (reference[:, 3] - reference[:, 3].mean()) * bound / stds[3], rtol=1e-4
    )


def test_center_refuses_an_empty_reference():
    with pytest.raises(ValueError, match="non-empty"):
        center(np.ones((2, 3)), np.ones((0, 3)))
