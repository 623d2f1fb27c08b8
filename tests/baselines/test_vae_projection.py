import numpy as np
import pytest

import keras
from helpers import explained_fraction, low_rank_vectors
from marc_keras.baselines.vae_projection import VAEProjection


@pytest.fixture(scope="module")
def fitted():
    vectors, latent = low_rank_vectors()
    vae = VAEProjection(3, hidden_units=(32,), epochs=40, batch_size=64).fit(vectors[:400])
    return vae, vectors, latent


def test_shapes_and_reconstruction_beats_the_mean(fitted):
    vae, vectors, _ = fitted
    held_out = vectors[400:]
    codes = vae.transform(held_out)
    assert codes.shape == (100, 3) and codes.dtype == np.float32
    error = ((vae.reconstruct(held_out) - held_out) ** 2).mean()
    predict_the_mean = ((held_out - vectors[:400].mean(axis=0)) ** 2).mean()
    assert error < 0.2 * predict_the_mean
    assert vae.loss_history[-1] < vae.loss_history[0]


def test_transform_is_the_deterministic_posterior_mean(fitted):
    vae, vectors, latent = fitted
    codes = vae.transform(vectors[400:])
    np.testing.assert_array_equal(codes, vae.transform(vectors[400:]))
    outputs = vae.model(vae._standardise(vectors[400:]), training=False)
    np.testing.assert_allclose(codes, keras.ops.convert_to_numpy(outputs["code"]), atol=1e-6)
    assert explained_fraction(codes, latent[400:]) > 0.9


def test_same_seed_same_projection_other_seed_differs():
    vectors, _ = low_rank_vectors(rows=120, dim=8)

    def codes(seed):
        return (
            VAEProjection(2, hidden_units=(8,), epochs=2, batch_size=32, seed=seed)
            .fit(vectors)
            .transform(vectors)
        )

    np.testing.assert_array_equal(codes(0), codes(0))
    assert not np.allclose(codes(0), codes(1))


def test_bad_use_is_explained():
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VAEProjection(2, beta=-1.0)
    with pytest.raises(ValueError, match="at least 2 rows and 16 columns"):
        VAEProjection(16).fit(np.zeros((10, 8)))
    with pytest.raises(ValueError, match="Call VAEProjection.fit before transform"):
        VAEProjection(2).transform(np.zeros((3, 4)))
