"""Linear CKA: how much of one representation's geometry another keeps (Kornblith et al., 2019)."""

from __future__ import annotations

import numpy as np


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centered kernel alignment of two representations of the same rows.

    ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F) with column-centred
    X, Y: 1 when Y is an orthogonal transform and rescaling of X, near 0 when
    they share no linear structure. MARC's HSIC term ties the compressed
    vectors c to the backbone's r (Sec. 3); CKA(r, c) on held-out users says
    how far it did, on a scale that does not move with the batch size or the
    kernel bandwidth the way the HSIC estimate does.

    Args:
        x: (N, d) array.
        y: (N, k) array, row i describing the same user or item as x's row i.

    Returns:
        CKA in [0, 1].

    Example:
    >>> linear_cka(r_validation_users, c_validation_users)
    0.62
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"linear_cka needs two 2-d arrays with the same number of rows; got shapes "
            f"{x.shape} and {y.shape}."
        )
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    scale = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / scale) if scale > 0 else 0.0
