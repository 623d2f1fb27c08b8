"""Item index -> id-embedding row, with cold items on a shared row and id dropout (issue 29)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

# The id-embedding row of padding, unknown and cold items.
OUT_OF_VOCABULARY = 0


@keras.saving.register_keras_serializable(package="marc_keras")
class ItemIdIndex(keras.layers.Layer):
    """Maps item indices to the rows of an item id embedding.

    Warm items keep their own row; cold items (`set_cold`) share row 0, the
    out-of-vocabulary id, so a model can tell them apart only by their
    attributes and vectors (the cold-item protocol of MARC's re-ranking and
    retrieval tables, `marc_keras.data.cold_items`). In training,
    `item_id_dropout` sends that share of items to row 0 too (DropoutNet,
    Volkovs et al. 2017): without it, row 0 is never trained and the model
    never learns to place an item without its id. The table is a
    non-trainable weight, saved with the model.

    Args:
        num_items: item index vocabulary (index 0 = padding / unknown).
        item_id_dropout: share of items sent to row 0 in training, in [0, 1).
        **kwargs: base layer arguments.

    Returns:
        Called on item indices of any shape, int32 id-embedding rows of the same shape.

    Example:
    >>> index = ItemIdIndex(num_items=5)
    >>> index.set_cold([2, 3])
    >>> index(np.array([1, 2, 3, 4]))  # [1, 0, 0, 4]
    """

    def __init__(self, num_items: int, item_id_dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(item_id_dropout) < 1.0:
            raise ValueError(f"item_id_dropout must be in [0, 1); got {item_id_dropout}.")
        self.num_items = int(num_items)
        self.item_id_dropout = float(item_id_dropout)
        self.seed_generator = keras.random.SeedGenerator()
        self.rows = self.add_weight(
            shape=(self.num_items,),
            initializer=lambda shape, dtype=None: ops.arange(shape[0], dtype="int32"),
            dtype="int32",
            trainable=False,
            name="rows",
        )
        self.built = True

    def set_cold(self, cold_items: np.ndarray | None) -> None:
        """Points `cold_items` (item indices) at the shared row; every other item at its own."""
        rows = np.arange(self.num_items, dtype="int32")
        if cold_items is not None:
            rows[np.asarray(cold_items, "int64")] = OUT_OF_VOCABULARY
        self.rows.assign(rows)

    def call(self, items, training=None):
        rows = ops.take(self.rows, ops.cast(items, "int32"), axis=0)
        if training and self.item_id_dropout:
            dropped = keras.random.uniform(ops.shape(rows), seed=self.seed_generator)
            rows = ops.where(dropped < self.item_id_dropout, ops.zeros_like(rows), rows)
        return rows

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "item_id_dropout": self.item_id_dropout,
        }
