"""A stack of Dense layers shared by MARC's compression and matching networks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras


def build_dense_stack(
    hidden_units: Iterable[int],
    output_units: int,
    activation: str | Callable | None,
    dropout: float,
    name: str,
    kernel_regularizer: keras.regularizers.Regularizer | None = None,
) -> list[keras.layers.Layer]:
    """Dense(hidden, activation) [+ Dropout] per hidden size, then a linear Dense.

    Args:
        hidden_units: sizes of the hidden layers, possibly empty.
        output_units: size of the final linear layer.
        activation: activation of the hidden layers.
        dropout: dropout rate after each hidden layer (0 for none).
        name: prefix of the layer names.
        kernel_regularizer: optional regularizer of every layer's kernel.

    Returns:
        A list of layers to apply in order.
    """
    hidden_units = [int(units) for units in hidden_units]
    if any(units <= 0 for units in hidden_units) or int(output_units) <= 0:
        raise ValueError(
            f"{name}: layer sizes must be positive; got hidden {hidden_units} "
            f"and output {output_units}."
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{name}: dropout must be in [0, 1); got {dropout}.")
    layers = []
    for index, units in enumerate(hidden_units):
        layers.append(
            keras.layers.Dense(
                units,
                activation=activation,
                kernel_regularizer=kernel_regularizer,
                name=f"{name}_hidden_{index}",
            )
        )
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{name}_dropout_{index}"))
    layers.append(
        keras.layers.Dense(
            int(output_units), kernel_regularizer=kernel_regularizer, name=f"{name}_output"
        )
    )
    return layers
