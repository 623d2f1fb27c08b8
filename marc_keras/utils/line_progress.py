"""Training progress as plain lines, for logs that are files rather than terminals."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import keras


def progress_is_interactive(stream: TextIO | None = None) -> bool:
    """True when `stream` (stdout by default) is a terminal that can redraw a bar."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


class LineProgress(keras.callbacks.Callback):
    """One plain line every `interval_s` seconds and one per epoch: no ANSI redraws.

    Keras' progress bar rewrites its line with escape codes many times a
    second; in a log file that is thousands of unreadable lines. Use this
    callback with `verbose=0` when stdout is not a terminal.

    Args:
        log: callable taking one line.
        interval_s: seconds between step lines.
        total_steps: steps of each epoch, for "step k/n" (default: Keras' own count).

    Example:
    >>> model.fit(batches, verbose=0, callbacks=[LineProgress(print)])
    epoch 1 step 40/128 (31%) loss 0.6712 auc 0.5873 | 12.0 s
    """

    def __init__(
        self,
        log: Callable[[str], object] = print,
        interval_s: float = 30.0,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.log = log
        self.interval_s = float(interval_s)
        self.total_steps = total_steps
        self._epoch = 0
        self._last = 0.0
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._started = self._last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now - self._last < self.interval_s:
            return
        self._last = now
        total = self.total_steps or self.params.get("steps")
        position = (
            f"{batch + 1}/{total} ({100 * (batch + 1) / total:.0f}%)" if total else str(batch + 1)
        )
        self.log(
            f"epoch {self._epoch + 1} step {position} {_format(logs)} | {now - self._started:.1f} s"
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.log(
            f"epoch {epoch + 1} done {_format(logs)} | {time.perf_counter() - self._started:.1f} s"
        )


def _format(logs):
    return " ".join(f"{name} {float(value):.4f}" for name, value in (logs or {}).items())


def count_progress(
    total: int,
    unit: str = "texts",
    log: Callable[[str], object] | None = None,
    interval_s: float = 30.0,
) -> Callable[[int], None]:
    """A callable `advance(count)` that logs "k/total unit (p%)" every `interval_s`
    seconds and at the end.

    The plain-line counterpart of `keras.utils.Progbar` for output that is
    not a terminal; lines go to stderr unless `log` is given.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = last = time.perf_counter()
    done = 0

    def advance(count):
        nonlocal done, last
        done += count
        now = time.perf_counter()
        if now - last >= interval_s or done >= total:
            last = now
            log(f"{done}/{total} {unit} ({100 * done / total:.0f}%) | {now - started:.1f} s")

    return advance
