"""Centering and outlier-dimension scaling of frozen text vectors before a downstream ranker.

numpy only, so the TFRS child process and the Keras evaluator treat vectors
the same way without importing each other's framework.
"""

from __future__ import annotations

import numpy as np

# A dimension whose std exceeds this multiple of the median dimension's std
# is scaled down to it.
MAX_STD_RATIO = 4.0


def center(
    vectors: np.ndarray, reference: np.ndarray, max_std_ratio: float = MAX_STD_RATIO
) -> np.ndarray:
    """Subtracts `reference`'s per-dimension mean and shrinks outlier dimensions.

    Pooled decoder states carry a few "massive activation" dimensions: in
    SmolLM2-135M's item vectors at layer 12 one dimension's std is 310x the
    median dimension's, with values up to |x| ~ 450-600, and it swings with
    the text length (the first token's activation, averaged over the text).
    Fed as they are, such dimensions saturate the ranker's adaptor and its
    loss diverges (DCNv2 logloss ~6). Centering removes the offset; every
    dimension whose std exceeds `max_std_ratio` x the median std is scaled
    down to that bound; the rest keep their geometry. Well-behaved vectors
    are only centered (MiniLM's widest dimension is 1.3x the median).
    Scaling every dimension to unit variance was tried and rejected: it
    turned MiniLM's vectors into near-ids that the ranker overfits (frozen
    MiniLM fell from DCNv2's AUC to 0.02 below it). Statistics come from the
    rows of training users (items) only, so no evaluation vector shapes them.

    Args:
        vectors: (N, d) array.
        reference: (M, d) rows the statistics come from, M >= 1.
        max_std_ratio: the largest std a dimension keeps, as a multiple of
            the median dimension's std.

    Returns:
        float32 (N, d).

    Example:
    >>> reference = np.array([[1.0, 1.0, 1.0, 500.0], [3.0, 3.0, 3.0, 540.0]])
    >>> center(reference, reference)
    array([[-1., -1., -1., -4.],
           [ 1.,  1.,  1.,  4.]], dtype=float32)
    """
    reference = np.asarray(reference, "float64")
    if reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"center needs a non-empty (M, d) reference; got shape {reference.shape}.")
    std = reference.std(axis=0)
    bound = max_std_ratio * np.median(std)
    shrink = np.maximum(std / bound, 1.0) if bound > 0 else 1.0
    return ((np.asarray(vectors, "float64") - reference.mean(axis=0)) / shrink).astype("float32")
