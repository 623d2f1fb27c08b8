import numpy as np
import pytest

from marc_keras.probing.user_click_probe import UserClickProbe, _fit_ridge, r_squared


@pytest.mark.parametrize("rows", [200, 8])  # primal (N >= d) and dual (N < d) forms
def test_ridge_matches_the_augmented_least_squares_solution(rows):
    rng = np.random.default_rng(0)
    x, y, alpha = rng.normal(size=(rows, 12)) + 2.0, rng.normal(size=rows), 3.0
    coefficients, intercept = _fit_ridge(x, y, alpha)
    # Independent form: minimise |y - Xw - b|^2 + alpha |w|^2 as one least-squares
    # problem over [w, b] after centering (the intercept is not penalised).
    xc, yc = x - x.mean(axis=0), y - y.mean()
    design = np.vstack([xc, np.sqrt(alpha) * np.eye(12)])
    target = np.concatenate([yc, np.zeros(12)])
    expected, *_ = np.linalg.lstsq(design, target, rcond=None)
    np.testing.assert_allclose(coefficients, expected, atol=1e-8)
    assert intercept == pytest.approx(y.mean() - x.mean(axis=0) @ expected)


def test_a_linear_signal_generalises_and_memorised_noise_does_not():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=6)
    signal_train, signal_held = rng.normal(size=(400, 6)), rng.normal(size=(200, 6))
    probe = UserClickProbe().fit(signal_train, signal_train @ weights)
    assert probe.score(signal_held, signal_held @ weights) > 0.99
    # A wide random vector per user fits the training users' rates, not new users'.
    noise_train, noise_held = rng.normal(size=(400, 384)), rng.normal(size=(200, 384))
    rates_train, rates_held = rng.random(400), rng.random(200)
    probe = UserClickProbe(alphas=(1e-3,)).fit(noise_train, rates_train)
    assert probe.score(noise_train, rates_train) > 0.9
    assert probe.score(noise_held, rates_held) < 0.0


def test_evaluate_aggregates_samples_into_users():
    table = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0]])
    inputs = {
        "train": {"user": np.array([1, 1, 2, 2, 3, 4, 5, 5])},
        "validation": {"user": np.array([6, 6, 7])},
    }
    # rate = user / 10, as mean labels over each user's samples.
    labels = {
        "train": np.array([0.0, 0.2, 0.2, 0.2, 0.3, 0.4, 0.5, 0.5]),
        "validation": np.array([0.6, 0.6, 0.7]),
    }
    found = UserClickProbe(alphas=(1e-6,), folds=2).evaluate(table, inputs, labels)
    assert found["users_train"] == 5 and found["users_validation"] == 2
    assert found["r2_validation"] == pytest.approx(1.0, abs=1e-6)
    assert r_squared(np.array([1.0, 2.0]), np.array([1.5, 1.5])) == 0.0
