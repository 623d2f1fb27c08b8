"""PCA to k dimensions: the training-free compression baseline (MARC, Sec. 4.1)."""

from __future__ import annotations

import numpy as np


class PCAProjection:
    """Projects vectors onto their top-k principal components (numpy SVD).

    The baseline MARC-C has to beat: compress the frozen backbone's d-dim
    vectors to k dims without any training signal. Fit it on training data
    only (training users and the item catalogue), then apply it everywhere.

    Args:
        components: k, the output width.

    Example:
    >>> pca = PCAProjection(128).fit(train_vectors)
    >>> pca.transform(test_vectors).shape
    (N, 128)
    """

    def __init__(self, components: int = 128) -> None:
        if int(components) <= 0:
            raise ValueError(f"PCA components must be positive; got {components}.")
        self.components = int(components)
        self.mean = None
        self.basis = None  # (d, k)

    def fit(self, vectors: np.ndarray) -> PCAProjection:
        """Learns the mean and the top-k directions of `vectors` (N, d).

        Raises:
            ValueError: fewer than k rows or columns.
        """
        vectors = np.asarray(vectors, dtype="float64")
        if vectors.ndim != 2 or min(vectors.shape) < self.components:
            raise ValueError(
                f"PCA to {self.components} dims needs a 2-D array with at least "
                f"{self.components} rows and columns; got shape {vectors.shape}."
            )
        self.mean = vectors.mean(axis=0)
        _, _, right = np.linalg.svd(vectors - self.mean, full_matrices=False)
        basis = right[: self.components].T
        # SVD signs are arbitrary; fixing them makes the output reproducible.
        signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(self.components)])
        self.basis = basis * signs
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, d) -> (N, k) float32."""
        if self.basis is None:
            raise ValueError("Call PCAProjection.fit before transform.")
        return ((np.asarray(vectors, dtype="float64") - self.mean) @ self.basis).astype("float32")
