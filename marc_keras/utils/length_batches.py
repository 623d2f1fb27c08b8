"""Batches of similar length for encoding: less padding, the input order kept.

Shared by the Keras encoder (`MARCEncoder.encode`) and the ONNX Runtime
encoder (`marc_keras.export.OnnxEncoder`); imports neither Keras nor torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


def encode_in_length_order(
    tokens: Mapping[str, np.ndarray],
    output_dims: Mapping[str, int],
    run_batch: Callable[[dict[str, np.ndarray]], Mapping[str, object]],
    batch_size: int = 64,
    sort_by_length: bool = True,
    on_batch: Callable[[int], object] | None = None,
) -> dict[str, np.ndarray]:
    """Runs `run_batch` over token rows in batches and returns rows in input order.

    Padding is compute thrown away: sorting rows by token count before
    batching makes each batch pad only to its own longest row. Row i of every
    output belongs to row i of `tokens` either way.

    Args:
        tokens: dict of int arrays `token_ids`, `padding_mask`, (N, T),
            right-padded (as `TextTokenizer` makes them).
        output_dims: dict output name -> width.
        run_batch: callable taking a dict of (b, t) arrays and returning a
            dict name -> (b, width) arrays.
        batch_size: rows per call.
        sort_by_length: batch rows in length order (otherwise input order,
            every batch still trimmed to its longest row).
        on_batch: optional callable taking the number of rows just done.

    Returns:
        A dict name -> float32 (N, width).

    Example:
    >>> vectors = encode_in_length_order(tokens, {"compressed": 128}, session_run, 64)
    """
    count = len(tokens["padding_mask"])
    outputs = {name: np.zeros((count, dim), "float32") for name, dim in output_dims.items()}
    lengths = tokens["padding_mask"].sum(axis=1)
    order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(count)
    for start in range(0, count, batch_size):
        rows = order[start : start + batch_size]
        width = max(int(lengths[rows].max()), 1)
        batch = {name: array[rows, :width] for name, array in tokens.items()}
        vectors = run_batch(batch)
        for name, array in outputs.items():
            array[rows] = np.asarray(vectors[name], dtype="float32")
        if on_batch is not None:
            on_batch(len(rows))
    return outputs
