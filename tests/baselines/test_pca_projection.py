import numpy as np
import pytest

from marc_keras.baselines.pca_projection import PCAProjection


def test_recovers_the_dominant_directions_and_variance_order():
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :2]  # orthonormal (6, 2)
    latent = rng.normal(size=(500, 2)) * [5.0, 2.0]
    vectors = latent @ directions.T + 0.01 * rng.normal(size=(500, 6)) + 3.0
    pca = PCAProjection(2).fit(vectors)
    np.testing.assert_allclose(np.abs(pca.basis.T @ directions), np.eye(2), atol=1e-3)
    projected = pca.transform(vectors)
    assert projected.dtype == np.float32
    assert projected[:, 0].var() > projected[:, 1].var()
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-4)


def test_same_data_same_projection():
    vectors = np.random.default_rng(1).normal(size=(50, 8))
    np.testing.assert_array_equal(
        PCAProjection(3).fit(vectors).transform(vectors),
        PCAProjection(3).fit(vectors).transform(vectors),
    )


def test_bad_use_is_explained():
    with pytest.raises(ValueError, match="at least 128 rows"):
        PCAProjection(128).fit(np.zeros((10, 384)))
    with pytest.raises(ValueError, match="Call PCAProjection.fit"):
        PCAProjection(2).transform(np.zeros((3, 4)))
