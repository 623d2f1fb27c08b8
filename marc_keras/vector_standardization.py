"""Per-dimension standardization of frozen text vectors before a downstream ranker.

numpy only, so the TFRS child process and the Keras evaluator scale vectors
the same way without importing each other's framework.
"""

import numpy as np


def standardize(vectors, reference):
    """Shifts and scales every dimension of `vectors` by `reference`'s mean and std.

    Pooled LLM states differ in scale by orders of magnitude between models
    and layers: decoders carry a few "massive activation" dimensions
    (SmolLM2-135M's layers 12-29 reach |x| ~ 600 at a median std of 0.3-1.9)
    that saturate a ranker's adaptor and make its loss diverge. Standardizing
    puts every representation on one scale; the statistics come from the
    rows of training users (items) only, so no evaluation vector shapes them.

    Args:
        vectors: (N, d) array.
        reference: (M, d) rows the statistics come from, M >= 1.

    Returns:
        float32 (N, d): (vectors - mean) / std; a dimension constant over
        `reference` is only shifted.

    Example:
    >>> standardize(np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[1.0, 5.0], [3.0, 5.0]]))
    array([[-1.,  0.],
           [ 1.,  0.]], dtype=float32)
    """
    reference = np.asarray(reference, "float64")
    if reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"standardize needs a non-empty (M, d) reference; got shape {reference.shape}.")
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    return ((np.asarray(vectors, "float64") - mean) / np.where(std > 0, std, 1.0)).astype("float32")
