"""Does a user vector carry a user's click rate to users the model never saw? A ridge probe.

numpy only: a diagnostic for downstream results (issue "MARC-C must beat PCA").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALPHAS = tuple(10.0**power for power in range(-3, 6))


def _per_user_rate(users, labels):
    # users (N,) vocabulary indices, labels (N,) -> (unique users, mean label)
    unique, inverse = np.unique(users, return_inverse=True)
    counts = np.bincount(inverse)
    return unique, np.bincount(inverse, weights=labels) / counts


def _fit_ridge(x, y, alpha):
    # Centered ridge: returns (coefficients, intercept); the intercept is not penalised.
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc = x - x_mean
    if x.shape[0] >= x.shape[1]:
        coefficients = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    else:  # the dual form is cheaper when there are fewer users than dimensions
        dual = np.linalg.solve(xc @ xc.T + alpha * np.eye(x.shape[0]), y - y_mean)
        coefficients = xc.T @ dual
    return coefficients, y_mean - x_mean @ coefficients


def r_squared(y, predicted):
    """1 - residual / total sum of squares (negative when worse than the mean)."""
    total = ((y - y.mean()) ** 2).sum()
    return float(1.0 - ((y - predicted) ** 2).sum() / total) if total > 0 else 0.0


class UserClickProbe:
    """Ridge regression from a user's vector to the user's mean click label.

    The downstream ranker sees unseen test users, so what helps it is what a
    user vector says about a user it was not trained on. The probe fits a
    ridge map on training users (alpha chosen by K-fold cross-validation on
    training users only) and reports R^2 on training users (in sample) and on
    validation users (held out). A vector that memorises training users
    shows a high first figure and a low or negative second.

    Args:
        alphas: ridge penalties to choose from.
        folds: cross-validation folds over training users.
        seed: seeds the fold assignment.

    Example:
    >>> probe = UserClickProbe()
    >>> probe.fit(train_vectors, train_rates).score(validation_vectors, validation_rates)
    """

    def __init__(self, alphas: Sequence[float] = ALPHAS, folds: int = 5, seed: int = 0) -> None:
        if folds < 2:
            raise ValueError(f"UserClickProbe needs folds >= 2; got {folds}.")
        self.alphas = tuple(float(alpha) for alpha in alphas)
        self.folds = int(folds)
        self.seed = int(seed)

    def fit(self, vectors: np.ndarray, rates: np.ndarray) -> UserClickProbe:
        """Chooses alpha by cross-validated R^2 on these users, then fits on all of them."""
        x, y = np.asarray(vectors, "float64"), np.asarray(rates, "float64")
        if x.ndim != 2 or len(x) != len(y) or len(x) < self.folds:
            raise ValueError(
                f"UserClickProbe.fit needs (N, d) vectors and N rates, N >= {self.folds}; "
                f"got {x.shape} and {y.shape}."
            )
        fold = np.random.default_rng(self.seed).permutation(len(x)) % self.folds
        scores = {}
        for alpha in self.alphas:
            predicted = np.empty_like(y)
            for index in range(self.folds):
                held = fold == index
                coefficients, intercept = _fit_ridge(x[~held], y[~held], alpha)
                predicted[held] = x[held] @ coefficients + intercept
            scores[alpha] = r_squared(y, predicted)
        self.alpha = max(scores, key=scores.get)
        self.cross_validated_r2 = scores[self.alpha]
        self.coefficients, self.intercept = _fit_ridge(x, y, self.alpha)
        return self

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, "float64") @ self.coefficients + self.intercept

    def score(self, vectors: np.ndarray, rates: np.ndarray) -> float:
        """R^2 of the fitted probe on these users."""
        return r_squared(np.asarray(rates, "float64"), self.predict(vectors))

    def evaluate(self, user_table: np.ndarray, inputs: dict, labels: dict) -> dict:
        """R^2 on training and validation users of a `RankingFeatures` vector table.

        Args:
            user_table: (users + 1, d) table from `RankingFeatures.vector_table`.
            inputs: `RankingFeatures.inputs` (per split, the `user` indices).
            labels: `RankingFeatures.labels`.

        Returns:
            dict with `r2_train`, `r2_validation`, `r2_cross_validated`
            (on training users, the alpha's own figure), `alpha`, `users_train`,
            `users_validation`.
        """
        found = {}
        for split in ("train", "validation"):
            users, rates = _per_user_rate(inputs[split]["user"], labels[split])
            found[split] = (np.asarray(user_table)[users], rates)
        self.fit(*found["train"])
        return {
            "r2_train": self.score(*found["train"]),
            "r2_validation": self.score(*found["validation"]),
            "r2_cross_validated": self.cross_validated_r2,
            "alpha": self.alpha,
            "users_train": len(found["train"][1]),
            "users_validation": len(found["validation"][1]),
        }
