"""Exact validation AUC after each epoch, for early stopping of the downstream ranker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from marc_keras.ranking.ctr_metrics import auc

if TYPE_CHECKING:
    import numpy as np


class ValidationAUC(keras.callbacks.Callback):
    """Puts the exact validation AUC into the epoch logs as `val_auc`.

    Keras' `AUC` metric bins scores into 200 thresholds and, updated on
    every training batch, halves the ranker's training speed on CPU. This
    callback scores the validation samples once per epoch instead and
    computes the exact AUC (`ctr_metrics.auc`). List it before
    `EarlyStopping(monitor="val_auc")`: callbacks share the logs dict, in order.

    Args:
        inputs: the validation inputs (dict of arrays).
        labels: their 0/1 labels.
        batch_size: samples per prediction step.

    Example:
    >>> callbacks = [
    ...     ValidationAUC(x_val, y_val),
    ...     keras.callbacks.EarlyStopping("val_auc", mode="max"),
    ... ]
    """

    def __init__(
        self, inputs: dict[str, np.ndarray], labels: np.ndarray, batch_size: int = 4096
    ) -> None:
        super().__init__()
        self.inputs, self.labels, self.batch_size = inputs, labels, int(batch_size)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores = self.model.predict(self.inputs, batch_size=self.batch_size, verbose=0)
        if logs is not None:
            logs["val_auc"] = auc(self.labels, scores[:, 0])
