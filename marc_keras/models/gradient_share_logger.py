"""Logs, per epoch, how much of the gradient MARC's HSIC term sends (issue 28)."""

from __future__ import annotations

import keras


class GradientShareLogger(keras.callbacks.Callback):
    """Adds `MARC.gradient_shares` of one fixed batch to each epoch's logs.

    Put it before `CSVLogger` and `History` readers: the columns
    `gradient_share_hsic_compression`, `gradient_share_hsic_lora` (the HSIC
    part's gradient norm over the sum of it and the objective's, per weight
    group) and the two norms per group then land in history.csv.

    Args:
        x: one batch of MARC inputs (a validation batch: the figure must not
            move with the training order).
        y: its labels.

    Example:
    >>> model.fit(batches, callbacks=[GradientShareLogger(*validation[0]), csv_logger])
    """

    def __init__(self, x, y) -> None:
        super().__init__()
        self.x, self.y = x, y

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        found = self.model.gradient_shares(self.x, self.y)
        for group, share in found["gradient_share_hsic"].items():
            logs[f"gradient_share_hsic_{group}"] = share
            logs[f"gradient_norm_objective_{group}"] = found["objective_norm"][group]
            logs[f"gradient_norm_hsic_{group}"] = found["hsic_norm"][group]
