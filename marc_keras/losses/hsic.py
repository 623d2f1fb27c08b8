"""Hilbert-Schmidt independence criterion with Gaussian kernels (MARC, Sec. 3.3)."""

from __future__ import annotations

from keras import ops

# Squared bandwidths below this are raised to it, so that a batch whose rows
# are all equal (pairwise distances all 0) gives K = 1 and HSIC = 0, not NaN.
MIN_SQUARED_BANDWIDTH = 1e-12
# How the trace tr(K H L H) is scaled: "normalised" divides it by (B - 1)^2
# (Gretton et al. 2005, the estimator MARC writes down), "trace" keeps it as
# it is, as the HSIC-bottleneck code does; the latter is (B - 1)^2 times larger,
# so the same lambda weighs HSIC far more (issue "MARC-C must beat PCA").
HSIC_SCALES = ("normalised", "trace")


def _pairwise_squared_distances(x):
    # x: (B, d) -> (B, B); clipped because the expansion can go slightly negative.
    squared_norms = ops.sum(ops.square(x), axis=1)
    gram = ops.matmul(x, ops.transpose(x))
    distances = squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram
    return ops.maximum(distances, 0.0)


def _median_squared_distance(distances, batch_size):
    # The B diagonal zeros sort first; every off-diagonal pair appears twice,
    # which leaves the median of the pairs unchanged.
    flat = ops.sort(ops.reshape(distances, (-1,)))
    return ops.median(flat[batch_size:])


def _gaussian_kernel(x, sigma, batch_size):
    distances = _pairwise_squared_distances(x)
    if sigma is None:
        squared_bandwidth = ops.stop_gradient(_median_squared_distance(distances, batch_size))
    else:
        squared_bandwidth = ops.convert_to_tensor(float(sigma) ** 2, x.dtype)
    squared_bandwidth = ops.maximum(squared_bandwidth, MIN_SQUARED_BANDWIDTH)
    return ops.exp(-distances / (2.0 * squared_bandwidth))


def _center(kernel):
    # H K H with H = I - 11^T / B, without forming H.
    row_means = ops.mean(kernel, axis=0, keepdims=True)
    column_means = ops.mean(kernel, axis=1, keepdims=True)
    return kernel - row_means - column_means + ops.mean(kernel)


def hsic(
    x,
    y,
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    scale: str = "normalised",
):
    """Biased HSIC estimate between two batches of vectors.

    HSIC(X, Y) = tr(K H L H) / (B - 1)^2 with Gaussian kernels
    K_ij = exp(-|x_i - x_j|^2 / (2 sigma_x^2)), L likewise on y, and
    H = I - 11^T / B (MARC, Sec. 3.3; Gretton et al. 2005). The biased
    estimator is never negative. `x` and `y` may have different widths, which
    is how MARC ties the d-dim backbone space to the compressed space.

    A bandwidth of `None` uses the median heuristic: sigma^2 is the median of
    |a_i - a_j|^2 over the pairs i < j of the batch, treated as a constant
    (no gradient flows through it) and floored at 1e-12, so a constant batch
    gives 0 instead of NaN. Inputs are computed in float32 whatever the
    policy, because the kernel's exponent underflows in half precision.

    `-weight * hsic(x, y)` is differentiable and can be added to any loss
    (for example with `layer.add_loss`) to keep `y` informative about `x`.

    Args:
        x: tensor of shape (B, d_x).
        y: tensor of shape (B, d_y), rows paired with the rows of `x`.
        sigma_x: Gaussian bandwidth for `x`, or `None` for the median heuristic.
        sigma_y: Gaussian bandwidth for `y`, or `None` for the median heuristic.
        scale: "normalised" (divide the trace by (B - 1)^2, the default) or
            "trace" (the trace itself, as in the HSIC-bottleneck code).

    Returns:
        A float32 scalar tensor.

    Raises:
        ValueError: the inputs are not 2-D, their batch sizes differ, the batch
            has fewer than 2 rows (HSIC is undefined for one sample), or a
            bandwidth is not positive, or the scale is unknown.

    Example:
    >>> import numpy as np, marc_keras
    >>> x = np.random.default_rng(0).normal(size=(32, 384)).astype("float32")
    >>> float(marc_keras.hsic(x, x[:, :128])) > 0.0
    True
    """
    if scale not in HSIC_SCALES:
        raise ValueError(f"hsic scale must be one of {', '.join(HSIC_SCALES)}; got {scale!r}.")
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    y = ops.cast(ops.convert_to_tensor(y), "float32")
    if len(x.shape) != 2 or len(y.shape) != 2:
        raise ValueError(
            "hsic expects two 2-D tensors of shape (batch, features); got "
            f"shapes {tuple(x.shape)} and {tuple(y.shape)}."
        )
    batch_size = x.shape[0]
    if batch_size != y.shape[0]:
        raise ValueError(
            f"hsic needs paired rows, but x has {batch_size} rows and y has {y.shape[0]}."
        )
    if batch_size is not None and batch_size < 2:
        raise ValueError(
            f"hsic is undefined for a batch of {batch_size} sample: it "
            "measures dependence across samples and divides by (B - 1)^2. "
            "Use a batch size of at least 2 (MARC needs several dozen for a "
            "useful estimate)."
        )
    for name, sigma in (("sigma_x", sigma_x), ("sigma_y", sigma_y)):
        if sigma is not None and not float(sigma) > 0.0:
            raise ValueError(f"hsic {name} must be positive or None; got {sigma}.")
    kernel_x = _gaussian_kernel(x, sigma_x, batch_size)
    kernel_y = _gaussian_kernel(y, sigma_y, batch_size)
    trace = ops.sum(_center(kernel_x) * kernel_y)
    return trace if scale == "trace" else trace / float((batch_size - 1) ** 2)
