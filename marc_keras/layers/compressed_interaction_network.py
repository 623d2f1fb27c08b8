"""xDeepFM's compressed interaction network (CIN): explicit vector-wise high-order interactions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="marc_keras")
class CompressedInteractionNetwork(keras.layers.Layer):
    """Stack of CIN layers, each pooled by a sum over the embedding axis.

    From xDeepFM (Lian et al., "xDeepFM: Combining Explicit and Implicit
    Feature Interactions for Recommender Systems", KDD 2018). Layer k takes
    the Hadamard product of every base field x0_h with every feature map of
    the previous layer x_m, per embedding position d, and compresses the
    F * M_{k-1} products into M_k feature maps with a 1x1 convolution:

        x_k[b, n, d] = sum_{h, m} W_k[h * M_{k-1} + m, n] x0[b, h, d] x_{k-1}[b, m, d] + c_k[n]

    Follows FuxiCTR's `fuxictr/pytorch/layers/interactions/compressed_interaction_net.py`
    (`CompressedInteractionNet`) and KAR's `CIN` in `RS/layers.py`: no
    activation, and no split_half (every layer's full output both feeds the
    next layer and is pooled). FuxiCTR's final linear layer to one logit is
    left out, as in KAR's `CIN`: the ranker concatenates the pooled maps with
    its DNN output.

    Args:
        layer_sizes: number of feature maps of each CIN layer; KAR uses (50, 50).
        **kwargs: base layer arguments.

    Returns:
        Called on (B, F, E) field embeddings, returns (B, sum(layer_sizes)).

    Example:
    >>> cin = CompressedInteractionNetwork((50, 50))
    >>> cin(np.zeros((4, 6, 16), "float32")).shape
    torch.Size([4, 100])
    """

    def __init__(self, layer_sizes: Sequence[int] = (50, 50), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        layer_sizes = tuple(int(size) for size in layer_sizes)
        if not layer_sizes or min(layer_sizes) < 1:
            raise ValueError(
                "CompressedInteractionNetwork layer_sizes must be one or more sizes >= 1; "
                f"got {list(layer_sizes)}."
            )
        self.layer_sizes = layer_sizes

    def build(self, input_shape) -> None:
        if len(input_shape) != 3:
            raise ValueError(
                "CompressedInteractionNetwork takes (B, F, E) field embeddings; "
                f"got shape {input_shape}."
            )
        num_fields = input_shape[1]
        self.kernels, self.biases = [], []
        previous = num_fields
        for index, size in enumerate(self.layer_sizes):
            self.kernels.append(
                self.add_weight(
                    shape=(num_fields * previous, size),
                    initializer="glorot_uniform",
                    name=f"kernel_{index}",
                )
            )
            self.biases.append(
                self.add_weight(shape=(size,), initializer="zeros", name=f"bias_{index}")
            )
            previous = size

    def call(self, field_embeddings):
        # Embedding position first, so each 1x1 convolution is a matmul on the last axis.
        x0 = ops.transpose(field_embeddings, (0, 2, 1))  # (B, E, F)
        embedding_dim, num_fields = x0.shape[1], x0.shape[2]
        x = x0
        pooled = []
        for kernel, bias in zip(self.kernels, self.biases):
            # Channel h * M + m, as FuxiCTR's view of its (B, F, M, E) product.
            products = ops.reshape(
                x0[:, :, :, None] * x[:, :, None, :], (-1, embedding_dim, num_fields * x.shape[2])
            )  # (B, E, F * M)
            x = ops.matmul(products, kernel) + bias  # (B, E, size)
            pooled.append(ops.sum(x, axis=1))  # (B, size)
        return ops.concatenate(pooled, axis=-1)

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], sum(self.layer_sizes))

    def get_config(self) -> dict:
        return {**super().get_config(), "layer_sizes": list(self.layer_sizes)}
