"""Second-order factorization machine term over field embeddings (DeepFM's FM part)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="marc_keras")
class FactorizationMachine(keras.layers.Layer):
    """Sum of the inner products of every pair of field embeddings.

    The FM component of DeepFM (Guo et al., "DeepFM: A Factorization-Machine
    based Neural Network for CTR Prediction", IJCAI 2017), after Rendle's
    factorization machines: `sum_{i<j} <e_i, e_j>`, taken in O(F E) as
    `0.5 * sum_E((sum_F e)^2 - sum_F e^2)`. Follows FuxiCTR's
    `fuxictr/pytorch/layers/interactions/inner_product.py`
    (`InnerProductInteraction`, output "product_sum") and the second-order
    term of KAR's `DeepFM` in `RS/models.py`. The first-order (linear) term
    needs the raw feature ids, so it stays with the ranker.

    Args:
        **kwargs: base layer arguments.

    Returns:
        Called on (B, F, E) field embeddings, returns (B, 1).

    Example:
    >>> fm = FactorizationMachine()
    >>> fm(np.ones((4, 3, 8), "float32")).shape  # 3 pairs * 8 = 24 per row
    torch.Size([4, 1])
    """

    def build(self, input_shape) -> None:
        if len(input_shape) != 3:
            raise ValueError(
                f"FactorizationMachine takes (B, F, E) field embeddings; got shape {input_shape}."
            )

    def call(self, field_embeddings):
        square_of_sum = ops.square(ops.sum(field_embeddings, axis=1))  # (B, E)
        sum_of_squares = ops.sum(ops.square(field_embeddings), axis=1)  # (B, E)
        return 0.5 * ops.sum(square_of_sum - sum_of_squares, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], 1)
