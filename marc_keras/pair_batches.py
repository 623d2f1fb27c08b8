"""Training batches of tokenized user-item pairs in a reproducible order."""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np


class PairBatches(keras.utils.PyDataset):
    """Shuffled batches of MARC training pairs that can start mid-epoch.

    Epoch e visits the pairs in the order `default_rng((seed, e)).permutation`,
    so the order of every epoch is known in advance: a run resumed from a
    checkpoint taken after step k of epoch e trains on exactly the batches
    that the killed run had not reached (`start_step=k`). Pass
    `epoch_callback()` to `fit`: it tells the batches which epoch Keras is
    in (Keras calls `PyDataset.on_epoch_end` also when it first peeks at a
    batch, so counting those calls would be off by one). Each batch is
    trimmed, per tower, to its longest text: the cached token arrays are
    padded to the longest text of the whole sample.

    Args:
        inputs: dict name -> array (N, T) of token ids / padding masks, with
            `{tower}_padding_mask` entries for every tower.
        labels: float32 array (N,) of click labels.
        batch_size: pairs per batch.
        seed: seed of the per-epoch permutations.
        epoch: the epoch the first batch belongs to.
        start_step: batches of `epoch` to skip (already trained).

    Example:
    >>> batches = PairBatches(inputs, labels, batch_size=32, seed=0, epoch=1, start_step=40)
    >>> model.fit(batches, initial_epoch=1, epochs=2, shuffle=False,
    ...           callbacks=[batches.epoch_callback()])  # the rest of epoch 1
    """

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        start_step: int = 0,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.labels = np.asarray(labels, "float32")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.first_epoch = self.epoch = int(epoch)
        self.first_step = self.start_step = int(start_step)
        self.steps_per_epoch = math.ceil(len(self.labels) / self.batch_size)
        if not 0 <= self.start_step < self.steps_per_epoch:
            raise ValueError(
                f"start_step must be in [0, {self.steps_per_epoch}) for {len(self.labels)} pairs "
                f"in batches of {self.batch_size}; got {start_step}."
            )
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch):
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.labels))

    def __len__(self):
        return self.steps_per_epoch - self.start_step

    def __getitem__(self, index):
        start = (self.start_step + index) * self.batch_size
        rows = self._order[start : start + self.batch_size]
        batch = {name: values[rows] for name, values in self.inputs.items()}
        for name in self.inputs:
            if name.endswith("_padding_mask"):
                tower = name.removesuffix("_padding_mask")
                # (b, T) -> (b, t): t is the longest text of this batch.
                length = max(int(batch[name].sum(axis=1).max()), 1)
                for field in [key for key in batch if key.startswith(f"{tower}_")]:
                    batch[field] = batch[field][:, :length]
        return batch, self.labels[rows][:, None]

    def set_epoch(self, epoch: int) -> None:
        """Serves `epoch`'s batches; only the first epoch starts at `start_step`."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.start_step = self.first_step if epoch == self.first_epoch else 0
            self._order = self._permutation(self.epoch)

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A Keras callback that calls `set_epoch` at the start of every epoch."""
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self.set_epoch(epoch)
        )
