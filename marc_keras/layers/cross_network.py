"""DCN's (v1) cross network: explicit bounded-degree feature crosses with one vector per layer."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="marc_keras")
class CrossNetwork(keras.layers.Layer):
    """Stack of DCN v1 cross layers: x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l.

    From Deep & Cross Network (Wang et al., "Deep & Cross Network for Ad
    Click Predictions", ADKDD 2017, Sec. 2.2): each layer adds one degree
    of crossing with a single weight vector, so a layer costs O(d) where
    DCNv2's (`keras_rs.layers.FeatureCross`) costs O(d^2). Follows
    FuxiCTR's `fuxictr/pytorch/layers/interactions/cross_net.py`
    (`CrossInteraction`: `x0 * w(xi) + b`, plus the residual in
    `CrossNet`); KAR's `CrossNet(mode="v1")` in `RS/layers.py` is the same
    model.

    Args:
        num_layers: number of cross layers (KAR's DCN: 3).
        **kwargs: base layer arguments.

    Returns:
        Called on (B, d) features, returns (B, d).

    Example:
    >>> cross = CrossNetwork(3)
    >>> cross(np.ones((4, 96), "float32")).shape
    torch.Size([4, 96])
    """

    def __init__(self, num_layers: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"CrossNetwork num_layers must be at least 1; got {num_layers}.")
        self.num_layers = int(num_layers)

    def build(self, input_shape) -> None:
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"CrossNetwork takes (B, d) features; got shape {input_shape}.")
        width = int(input_shape[-1])
        self.kernels = [
            self.add_weight(shape=(width, 1), initializer="glorot_uniform", name=f"kernel_{i}")
            for i in range(self.num_layers)
        ]
        self.biases = [
            self.add_weight(shape=(width,), initializer="zeros", name=f"bias_{i}")
            for i in range(self.num_layers)
        ]

    def call(self, features):
        x = features
        for kernel, bias in zip(self.kernels, self.biases):
            x = features * ops.matmul(x, kernel) + bias + x  # (B, d) * (B, 1)
        return x

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_layers": self.num_layers}
