import numpy as np
import pytest
import torch

import marc_keras
from helpers import numpy_hsic


@pytest.fixture
def paired_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 384)).astype("float32")
    projection = rng.normal(size=(384, 128)).astype("float32") / np.sqrt(384)
    return x, np.tanh(x @ projection)


@pytest.mark.parametrize("sigmas", [(None, None), (20.0, 3.0), (None, 1.5)])
def test_matches_numpy_formula_for_384_vs_128(paired_batches, sigmas):
    x, y = paired_batches
    expected = numpy_hsic(x, y, *sigmas)
    got = float(marc_keras.hsic(x, y, *sigmas))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_even_batch_median_matches_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 7)), rng.normal(size=(5, 3))  # 10 pairs: even count
    np.testing.assert_allclose(float(marc_keras.hsic(x, y)), numpy_hsic(x, y), rtol=1e-4)


def test_dependent_samples_score_far_above_independent():
    # Representations with a few latent factors, as LLM vectors have; isotropic
    # 384-d noise makes every pairwise distance alike and every HSIC small.
    rng = np.random.default_rng(2)
    latent, other_latent = rng.normal(size=(2, 64, 4))
    to_original, to_compressed = rng.normal(size=(4, 384)), rng.normal(size=(4, 128))
    x = latent @ to_original + 0.1 * rng.normal(size=(64, 384))
    dependent_score = float(marc_keras.hsic(x, np.tanh(latent @ to_compressed)))
    independent_score = float(marc_keras.hsic(x, np.tanh(other_latent @ to_compressed)))
    assert 0.0 <= independent_score < 0.01
    assert dependent_score > 5 * independent_score


def test_never_negative_over_random_batches():
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, y = rng.normal(size=(8, 6)), rng.normal(size=(8, 2))
        assert float(marc_keras.hsic(x, y)) >= 0.0


def test_constant_batch_is_finite_zero():
    x = np.ones((16, 384), "float32")
    y = np.random.default_rng(4).normal(size=(16, 128)).astype("float32")
    assert float(marc_keras.hsic(x, y)) == pytest.approx(0.0, abs=1e-7)


def test_gradients_are_finite_also_for_a_constant_batch(paired_batches):
    x, y = paired_batches
    gradient_sizes = []
    for inputs in (x, np.ones_like(x)):
        xt = torch.tensor(inputs, requires_grad=True)
        yt = torch.tensor(y, requires_grad=True)
        marc_keras.hsic(xt, yt).backward()
        assert torch.isfinite(xt.grad).all() and torch.isfinite(yt.grad).all()
        gradient_sizes.append(float(yt.grad.abs().sum()))
    assert gradient_sizes[0] > 0.0


def test_batch_of_one_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="undefined for a batch of 1"):
        marc_keras.hsic(np.ones((1, 4)), np.ones((1, 2)))


def test_bad_shapes_and_bandwidths_are_refused():
    with pytest.raises(ValueError, match="paired rows"):
        marc_keras.hsic(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        marc_keras.hsic(np.ones((4,)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="sigma_y must be positive"):
        marc_keras.hsic(np.ones((4, 3)), np.ones((4, 3)), sigma_y=0.0)


@pytest.mark.parametrize("sigmas", [(None, None), (20.0, 3.0)])
def test_trace_scale_matches_numpy_and_is_b_minus_1_squared_larger(paired_batches, sigmas):
    x, y = paired_batches
    trace = float(marc_keras.hsic(x, y, *sigmas, scale="trace"))
    assert trace == pytest.approx(numpy_hsic(x, y, *sigmas, scale="trace"), rel=1e-4)
    normalised = float(marc_keras.hsic(x, y, *sigmas))
    assert trace == pytest.approx(normalised * (len(x) - 1) ** 2, rel=1e-5)


def test_unknown_scale_is_refused_with_the_choices():
    x = np.ones((4, 3), "float32")
    with pytest.raises(ValueError, match="scale must be one of normalised, trace; got 'sum'"):
        marc_keras.hsic(x, x, scale="sum")
