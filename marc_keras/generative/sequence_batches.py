"""Shuffled training batches of prompt + title sequences, each trimmed to its longest row."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from marc_keras.generative.generative_recommender import TRAINING_INPUTS


class SequenceBatches(keras.utils.PyDataset):
    """`GenerativeRecommender` training batches for `model.fit`, resumable mid-epoch.

    Each epoch's order is drawn from `(seed, epoch)`, so a run resumed at
    `start_step` of an epoch sees exactly the batches the uninterrupted run
    would have. Columns past a batch's longest sequence are cut: padding is
    compute thrown away, and prompts vary in length by tens of tokens.

    Args:
        arrays: `TitlePrompts.training_arrays` output (N rows).
        batch_size: sequences per step.
        seed: shuffling seed.
        epoch: the epoch whose order is served first.
        start_step: batches of that epoch already trained (skipped).

    Returns:
        Items are `(x, target_ids, target_mask)`: `x` holds `token_ids`,
        `padding_mask` (b, t) and `target_positions` (b, S).

    Example:
    >>> batches = SequenceBatches(arrays, batch_size=8, seed=0)
    >>> model.fit(batches, epochs=2, shuffle=False, callbacks=[batches.epoch_callback()])
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        start_step: int = 0,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        self.arrays = dict(arrays)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.lengths = self.arrays["padding_mask"].sum(axis=1)
        self.start_step = int(start_step)
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Serves `epoch`'s order; only the first epoch served skips `start_step` batches."""
        if getattr(self, "epoch", None) is not None and epoch != self.epoch:
            self.start_step = 0
        self.epoch = int(epoch)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths))
        self.order = order[self.start_step * self.batch_size :]

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A Keras callback that calls `set_epoch` at the start of every epoch."""
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self.set_epoch(epoch)
        )

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        width = int(self.lengths[rows].max())
        x = {
            name: self.arrays[name][rows, :width]
            if name != "target_positions"
            else self.arrays[name][rows]
            for name in TRAINING_INPUTS
        }
        return x, self.arrays["target_ids"][rows], self.arrays["target_mask"][rows]
