"""Mixture-of-experts adaptor that turns an LLM vector into a ranker field (KAR, MARC Sec. 4.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from marc_keras.layers.mlp_stack import build_dense_stack


def check_vector_tables(
    model: str, user_vector_dim: int | None, item_vector_dim: int | None, num_users: int | None
) -> None:
    """A model that feeds [user vector, item vector] to adaptors needs both tables, sized.

    Raises:
        ValueError: one table without the other, or tables without `num_users`.
    """
    if (user_vector_dim is None) != (item_vector_dim is None):
        raise ValueError(
            f"{model} takes user and item vector tables together: got "
            f"user_vector_dim={user_vector_dim}, item_vector_dim={item_vector_dim}."
        )
    if user_vector_dim is not None and not num_users:
        raise ValueError("With vector tables, num_users (the user table's rows) is required.")


@keras.saving.register_keras_serializable(package="marc_keras")
class ExpertAdaptor(keras.layers.Layer):
    """Maps an external vector to one ranker field through gated experts.

    Each expert is an MLP (hidden [128], output 32 by default); a softmax gate
    over the same input weighs them. This is how KAR and MARC feed LLM
    vectors of any width into a CTR model as a 32-d field (MARC Sec. 4.1.3).

    The regularisers (downstream v3) keep a ranker from memorising training
    users through their vectors; all of them act in training only, and with
    all of them off the layer is the v2 adaptor (same weights, same outputs).

    Args:
        num_experts: number of experts (DESIGN.md: 2-5).
        hidden_units: hidden sizes of each expert.
        output_dim: width of the field.
        input_dropout: dropout rate on the input vector (experts and gate
            see the same dropped vector).
        expert_dropout: dropout rate after each hidden layer of every expert.
        input_noise: std of Gaussian noise added to the input, as a multiple
            of each dimension's std; that std is a non-trainable weight set
            by `adapt` (ones until then).
        weight_decay: L2 penalty `weight_decay * sum(w ** 2)` on every
            kernel (experts and gate), added to the model's loss.
        seed: seed of the noise and dropout draws.
        **kwargs: base layer arguments.

    Returns:
        (B, d) -> (B, output_dim).

    Example:
    >>> adaptor = ExpertAdaptor(num_experts=3, input_noise=0.5)
    >>> adaptor.adapt(training_vectors)  # (N, 384): per-dimension std for the noise
    >>> adaptor(np.zeros((4, 384), "float32")).shape
    torch.Size([4, 32])
    """

    def __init__(
        self,
        num_experts: int = 3,
        hidden_units: Sequence[int] = (128,),
        output_dim: int = 32,
        input_dropout: float = 0.0,
        expert_dropout: float = 0.0,
        input_noise: float = 0.0,
        weight_decay: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"num_experts must be at least 1; got {num_experts}.")
        for name, rate in (("input_dropout", input_dropout), ("expert_dropout", expert_dropout)):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"ExpertAdaptor {name} must be in [0, 1); got {rate}.")
        for name, value in (("input_noise", input_noise), ("weight_decay", weight_decay)):
            if not float(value) >= 0.0:
                raise ValueError(f"ExpertAdaptor {name} must be >= 0; got {value}.")
        self.num_experts = int(num_experts)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.output_dim = int(output_dim)
        self.input_dropout = float(input_dropout)
        self.expert_dropout = float(expert_dropout)
        self.input_noise = float(input_noise)
        self.weight_decay = float(weight_decay)
        self.seed = seed
        # Created only when used, so the default adaptor draws no random
        # numbers and holds no weight that v2 did not have.
        regularizer = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        self.dropout = (
            keras.layers.Dropout(self.input_dropout, seed=seed, name="input_dropout")
            if self.input_dropout
            else None
        )
        self.noise_seed = keras.random.SeedGenerator(seed) if self.input_noise else None
        self.experts = [
            build_dense_stack(
                self.hidden_units,
                self.output_dim,
                "relu",
                self.expert_dropout,
                f"expert_{index}",
                kernel_regularizer=regularizer,
            )
            for index in range(self.num_experts)
        ]
        self.gate = keras.layers.Dense(
            self.num_experts, activation="softmax", kernel_regularizer=regularizer, name="gate"
        )

    def build(self, input_shape) -> None:
        for expert in self.experts:
            shape = input_shape
            for layer in expert:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.gate.build(input_shape)
        if self.input_noise:
            self.input_std = self.add_weight(
                shape=(input_shape[-1],), initializer="ones", trainable=False, name="input_std"
            )

    def adapt(self, vectors: np.ndarray) -> None:
        """Sets the per-dimension std that scales the input noise from (N, d) vectors.

        Call it with the training users' (items') vectors only, so no
        evaluation vector shapes training; without `input_noise` it does nothing.
        """
        vectors = np.asarray(vectors, "float64")
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError(
                f"ExpertAdaptor.adapt needs (N, d) vectors with N >= 2; got shape {vectors.shape}."
            )
        if not self.input_noise:
            return  # building here would change the order weights are initialised in
        if not self.built:
            self.build((None, vectors.shape[1]))
        self.input_std.assign(vectors.std(axis=0).astype("float32"))

    def call(self, vectors, training=None):
        if training and self.input_noise:
            noise = keras.random.normal(ops.shape(vectors), seed=self.noise_seed)
            vectors = vectors + noise * (self.input_noise * self.input_std)
        if self.dropout is not None:
            vectors = self.dropout(vectors, training=training)
        outputs = []
        for expert in self.experts:
            x = vectors
            for layer in expert:  # dropout layers take `training` from the call context
                x = layer(x)
            outputs.append(x)
        stacked = ops.stack(outputs, axis=1)  # (B, E, output_dim)
        weights = self.gate(vectors)[:, :, None]  # (B, E, 1)
        return ops.sum(stacked * weights, axis=1)

    def call_shared(self, shared, rows, training=None, row_indices=None):
        """`call` on [shared, row] for every row, without repeating `shared` per row.

        PRM feeds each list item [user vector, item vector]; the user part of
        every expert's first layer and of the gate is the same for a whole
        list. Those layers are linear in their input, so `x @ W` splits into
        `shared @ W[:d] + row @ W[d:]` and the first term is taken once per
        list instead of once per item: same weights, same outputs (to float
        rounding), about half the work of the adaptor's first layers.

        With `row_indices`, `rows` is a table and the second term is taken
        once per table row, then gathered: cheaper than once per item when a
        batch holds more items than the table has rows (PRM's item table of
        ~3,900 rows against 10,240 items in a batch of 1,024 lists).

        Input noise and dropout draw per item, so with either of them this
        gathers, concatenates and calls `call`.

        Args:
            shared: (B, d) input shared by the rows of each batch entry.
            rows: (B, n, d_row) per-row inputs, or with `row_indices` an
                (R, d_row) table.
            training: training flag.
            row_indices: optional (B, n) integer rows of the `rows` table.

        Returns:
            (B, n, output_dim), `call(concat([shared, row]))` for each row.
        """
        width = shared.shape[-1]
        if self.dropout is not None or self.input_noise:
            if row_indices is not None:
                rows = ops.take(rows, row_indices, axis=0)  # (B, n, d_row)
            count = ops.shape(rows)[1]
            pair = ops.concatenate(
                [ops.broadcast_to(shared[:, None, :], (ops.shape(rows)[0], count, width)), rows],
                axis=-1,
            )  # (B, n, d + d_row)
            field = self(ops.reshape(pair, (-1, pair.shape[-1])), training=training)
            return ops.reshape(field, (-1, count, self.output_dim))

        def split_dense(layer):
            kernel = layer.kernel  # (d + d_row, units)
            row_part = ops.matmul(rows, kernel[width:])  # (B, n, units) or (R, units)
            if row_indices is not None:
                row_part = ops.take(row_part, row_indices, axis=0)  # (B, n, units)
            x = ops.matmul(shared, kernel[:width])[:, None, :] + row_part
            if layer.use_bias:
                x = x + layer.bias
            return layer.activation(x)  # (B, n, units)

        outputs = []
        for expert in self.experts:
            x = split_dense(expert[0])
            for layer in expert[1:]:
                x = layer(x, training=training)
            outputs.append(x)
        stacked = ops.stack(outputs, axis=-2)  # (B, n, E, output_dim)
        weights = split_dense(self.gate)[..., None]  # (B, n, E, 1)
        return ops.sum(stacked * weights, axis=-2)

    def compute_output_shape(self, input_shape) -> tuple:
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "hidden_units": list(self.hidden_units),
            "output_dim": self.output_dim,
            "input_dropout": self.input_dropout,
            "expert_dropout": self.expert_dropout,
            "input_noise": self.input_noise,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }
