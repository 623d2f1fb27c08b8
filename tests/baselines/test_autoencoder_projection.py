import numpy as np
import pytest
from helpers import explained_fraction, low_rank_vectors

from marc_keras.baselines.autoencoder_projection import AutoencoderProjection


@pytest.fixture(scope="module")
def fitted():
    vectors, latent = low_rank_vectors()
    autoencoder = AutoencoderProjection(3, hidden_units=(32,), epochs=40, batch_size=64).fit(
        vectors[:400]
    )
    return autoencoder, vectors, latent


def test_shapes_and_reconstruction_beats_the_mean(fitted):
    autoencoder, vectors, _ = fitted
    held_out = vectors[400:]
    codes = autoencoder.transform(held_out)
    assert codes.shape == (100, 3) and codes.dtype == np.float32
    reconstruction = autoencoder.reconstruct(held_out)
    assert reconstruction.shape == held_out.shape
    error = ((reconstruction - held_out) ** 2).mean()
    predict_the_mean = ((held_out - vectors[:400].mean(axis=0)) ** 2).mean()
    assert error < 0.05 * predict_the_mean
    assert autoencoder.loss_history[-1] < autoencoder.loss_history[0]


def test_bottleneck_captures_the_planted_signal(fitted):
    autoencoder, vectors, latent = fitted
    assert explained_fraction(autoencoder.transform(vectors[400:]), latent[400:]) > 0.9


def test_same_seed_same_projection_other_seed_differs():
    vectors, _ = low_rank_vectors(rows=120, dim=8)

    def codes(seed):
        return (
            AutoencoderProjection(2, hidden_units=(8,), epochs=2, batch_size=32, seed=seed)
            .fit(vectors)
            .transform(vectors)
        )

    np.testing.assert_array_equal(codes(0), codes(0))
    assert not np.allclose(codes(0), codes(1))


def test_constant_columns_do_not_break_standardisation():
    vectors, _ = low_rank_vectors(rows=64, dim=6)
    vectors[:, 2] = 7.0
    codes = (
        AutoencoderProjection(2, hidden_units=(8,), epochs=1, batch_size=32)
        .fit(vectors)
        .transform(vectors)
    )
    assert np.isfinite(codes).all()


def test_bad_use_is_explained():
    with pytest.raises(ValueError, match="at least 2 rows and 128 columns"):
        AutoencoderProjection(128).fit(np.zeros((10, 64)))
    with pytest.raises(ValueError, match=r"2-D \(N, d\) array"):
        AutoencoderProjection(2).fit(np.zeros(10))
    with pytest.raises(ValueError, match="NaN or infinity"):
        AutoencoderProjection(2).fit(np.array([[1.0, 2.0, 3.0], [np.nan, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="Call AutoencoderProjection.fit before transform"):
        AutoencoderProjection(2).transform(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="components must be a positive whole number"):
        AutoencoderProjection(0)
    with pytest.raises(ValueError, match="hidden_units must be positive widths"):
        AutoencoderProjection(2, hidden_units=(0,))
    fitted = AutoencoderProjection(2, hidden_units=(4,), epochs=1).fit(
        np.random.default_rng(0).normal(size=(8, 4))
    )
    with pytest.raises(ValueError, match="fitted on 4-d vectors; got 5-d"):
        fitted.transform(np.zeros((2, 5)))
