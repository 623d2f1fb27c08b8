"""L2D: ranking items in the LLM's latent space instead of decoding titles (2509.11524 Sec. 3)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from marc_keras.utils.atomic_files import write_atomically

MEMORY_STATES = "memory-states.npy"
MEMORY_ITEMS = "memory-items.npy"
CHUNKS = "chunks"


def _save_npy(path, array):
    write_atomically(path, lambda temporary: np.save(temporary, array))


def squared_distances(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(Q, K) squared Euclidean distances, in float64 for stable ranking."""
    queries, keys = np.asarray(queries, "float64"), np.asarray(keys, "float64")
    distances = (
        (queries**2).sum(axis=1)[:, None] - 2.0 * queries @ keys.T + (keys**2).sum(axis=1)[None, :]
    )
    return np.maximum(distances, 0.0)


class LatentDecoder:
    """Scores every item by the distance between a user's state and the item's latent vector.

    The memory holds, for each training sample j, the state h_j the LM
    computes at the last prompt token (`GenerativeRecommender.prompt_states`)
    and the sample's target item v_j. Then (L2D Sec. 3.2-3.3):

    - L2D-G: h_v = mean of the h_j labelled v; score(t, v) = 1 / ||h_t - h_v||.
    - L2D-L: the `local_size` (M) memory entries nearest to h_t; h_v = mean
      of those among them labelled v. Items found among the M rank first by
      that distance; the rest follow in L2D-G order.

    Items never seen as a label have no vector and rank last (in catalogue
    order): `cold_rate` counts test targets among them.

    Args:
        states: float (N, d) memory states.
        items: int (N,) catalogue index of each entry's target item.
        item_count: catalogue size (ranking runs over all items).

    Example:
    >>> decoder = LatentDecoder(memory_states, memory_items, item_count=3883)
    >>> top = decoder.rank(user_states, top_k=20, local_size=256)  # L2D-L
    >>> top_global = decoder.rank(user_states, top_k=20)  # L2D-G
    """

    def __init__(self, states: np.ndarray, items: np.ndarray, item_count: int) -> None:
        states, items = np.asarray(states, "float32"), np.asarray(items)
        if states.ndim != 2 or len(states) != len(items) or not len(states):
            raise ValueError(
                f"The memory needs states (N, d) and one item per state; got states "
                f"{states.shape} and {items.shape} items."
            )
        if (
            not np.issubdtype(items.dtype, np.integer)
            or items.min() < 0
            or items.max() >= item_count
        ):
            raise ValueError(
                f"Memory items must be catalogue indices in [0, {item_count}); got values "
                f"from {items.min()} to {items.max()}."
            )
        self.states = states
        self.items = items.astype("int64")
        self.item_count = int(item_count)
        counts = np.bincount(self.items, minlength=self.item_count)
        sums = np.zeros((self.item_count, states.shape[1]), "float64")
        np.add.at(sums, self.items, states)
        self.seen = counts > 0  # (I,)
        self.seen_items = np.flatnonzero(self.seen)
        # (I_seen, d): L2D-G's item vectors.
        self.item_vectors = (sums[self.seen] / counts[self.seen, None]).astype("float32")

    @classmethod
    def load(cls, directory: str | os.PathLike, item_count: int) -> LatentDecoder:
        """Reads a memory written by `build_memory`."""
        directory = Path(directory)
        states_path = directory / MEMORY_STATES
        if not states_path.is_file():
            raise FileNotFoundError(
                f"'{states_path}' does not exist; build the memory first "
                "(`marc-keras l2d memory`, or LatentDecoder.build_memory)."
            )
        return cls(np.load(states_path), np.load(directory / MEMORY_ITEMS), item_count)

    @staticmethod
    def build_memory(
        encode: Callable[[np.ndarray], np.ndarray],
        row_count: int,
        items: np.ndarray,
        directory: str | os.PathLike,
        chunk_rows: int = 256,
        log: Callable[[str], object] | None = None,
    ) -> Path:
        """Encodes the memory in chunks, each saved as it finishes; a rerun resumes.

        Args:
            encode: takes an int array of row indices, returns their states
                (len(rows), d), e.g. prompt states of those training samples.
            row_count: how many samples the memory holds.
            items: int (row_count,) target item (catalogue index) per sample.
            directory: where `memory-states.npy` and `memory-items.npy`
                are written (chunks go to `chunks/` until then).
            chunk_rows: samples per saved chunk: a killed build loses at
                most one chunk.
            log: optional callable for progress lines.

        Returns:
            `directory`.
        """
        # Imported here: line_progress loads Keras, whose load hook imports
        # modules that import line_progress (a cycle when Keras is not loaded yet).
        from marc_keras.utils.line_progress import count_progress

        directory = Path(directory)
        if (directory / MEMORY_STATES).is_file():
            return directory
        items = np.asarray(items)
        if len(items) != row_count:
            raise ValueError(f"items has {len(items)} entries for {row_count} memory rows.")
        chunks = directory / CHUNKS
        chunks.mkdir(parents=True, exist_ok=True)
        starts = range(0, row_count, chunk_rows)
        done = [start for start in starts if (chunks / f"{start:09d}.npy").is_file()]
        if log and done:
            log(f"resuming the memory: {len(done)} of {len(starts)} chunks are built")
        progress = count_progress(row_count, "memory samples", log) if log else None
        for start in starts:
            path = chunks / f"{start:09d}.npy"
            rows = np.arange(start, min(start + chunk_rows, row_count))
            if not path.is_file():
                _save_npy(path, np.asarray(encode(rows), "float32"))
            if progress is not None:
                progress(len(rows))
        states = np.concatenate([np.load(chunks / f"{start:09d}.npy") for start in starts])
        _save_npy(directory / MEMORY_ITEMS, items.astype("int64"))
        _save_npy(directory / MEMORY_STATES, states)
        for start in starts:
            (chunks / f"{start:09d}.npy").unlink()
        chunks.rmdir()
        return directory

    def cold_rate(self, targets: np.ndarray) -> float:
        """Share of target items never seen as a memory label (they cannot be scored)."""
        return float(np.mean(~self.seen[np.asarray(targets)]))

    def _global_order(self, user_states):
        # (U, I_seen) nearest first
        distances = squared_distances(user_states, self.item_vectors)
        return self.seen_items[np.argsort(distances, axis=1, kind="stable")]

    def rank(
        self, user_states: np.ndarray, top_k: int, local_size: int | None = None
    ) -> np.ndarray:
        """The top-k catalogue indices per user, best first.

        Args:
            user_states: float (U, d) prompt states of the users.
            top_k: items returned per user.
            local_size: M for L2D-L; `None` ranks by L2D-G.

        Returns:
            int64 (U, top_k).
        """
        user_states = np.asarray(user_states, "float32")
        top_k = min(int(top_k), self.item_count)
        if local_size is not None and int(local_size) < 1:
            raise ValueError(f"local_size (M) must be >= 1; got {local_size}.")
        global_order = self._global_order(user_states)
        cold = np.flatnonzero(~self.seen)
        ranked = np.empty((len(user_states), top_k), "int64")
        if local_size is None:
            order = np.concatenate(
                [global_order, np.broadcast_to(cold, (len(user_states), len(cold)))], 1
            )
            return order[:, :top_k].copy()
        local_size = min(int(local_size), len(self.states))
        memory_distances = squared_distances(user_states, self.states)  # (U, N)
        nearest = np.argpartition(memory_distances, local_size - 1, axis=1)[:, :local_size]
        for user, entries in enumerate(nearest):
            local_items, slot = np.unique(self.items[entries], return_inverse=True)
            sums = np.zeros((len(local_items), self.states.shape[1]), "float64")
            np.add.at(sums, slot, self.states[entries])
            means = sums / np.bincount(slot)[:, None]
            distances = squared_distances(user_states[user : user + 1], means)[0]
            local_order = local_items[np.argsort(distances, kind="stable")]
            rest = global_order[user][~np.isin(global_order[user], local_order)]
            ranked[user] = np.concatenate([local_order, rest, cold])[:top_k]
        return ranked
