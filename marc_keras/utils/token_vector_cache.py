"""Vectors of token rows kept on disk, so runs sharing a frozen encoder encode each text once."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from marc_keras.utils.atomic_files import write_atomically

KEY_BYTES = 16


class TokenVectorCache:
    """A file of encoder outputs keyed by each row's real tokens.

    MARC's head warm-up (`training.head_warmup_epochs`) trains on the frozen
    backbone's pooled vectors of every distinct training text; a comparison
    runs it once per method and seed on the same texts (DESIGN.md Sec. 5),
    and those vectors only depend on the backbone and its pooling. A row's
    key is a digest of its tokens without padding, so the same text padded
    to another width finds the same vector. That vector was computed in the
    batch of its first encoding, so it can differ from a fresh encoding in
    float rounding (other padding widths): a run reading the cache learns the
    same to within such rounding, not bit for bit (the likely reason MARC's
    downstream AUC on ml-1m-half moved by up to 0.0021 between a cached and
    an uncached run of one seed, far inside the seed std). The
    caller chooses one file per encoder: vectors of another encoder must
    not share it.

    Args:
        path: the `.npz` file; read if it exists, written on `vectors`.
        width: the vectors' width; a stored file of another width is an error.

    Example:
    >>> cache = TokenVectorCache("runs/cmp/frozen-vector-cache/ab12.npz", 384)
    >>> vectors = cache.vectors(tokens, encode)  # (N, 384), encodes only new rows
    >>> cache.hits, cache.misses  # rows read, distinct texts encoded
    """

    def __init__(self, path: str | os.PathLike, width: int) -> None:
        self.path = Path(path)
        self.width = int(width)
        self.hits = self.misses = 0
        self._keys = np.zeros((0,), f"S{KEY_BYTES}")
        self._stored = np.zeros((0, self.width), "float32")
        if self.path.is_file():
            with np.load(self.path) as stored:
                self._keys, self._stored = stored["keys"], stored["vectors"]
            if self._stored.shape[1] != self.width:
                raise ValueError(
                    f"Vector cache '{self.path}' holds vectors of width "
                    f"{self._stored.shape[1]}, not {self.width}: it belongs to another "
                    "encoder; delete it or point the run at another cache."
                )
        self._row_of_key = {key: row for row, key in enumerate(self._keys.tolist())}

    @staticmethod
    def keys(token_ids: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        """(N, T) right-padded rows -> (N,) digests of their real tokens."""
        lengths = padding_mask.sum(axis=1)
        return np.array(
            [
                hashlib.blake2b(
                    np.ascontiguousarray(row[:length], dtype="int64").tobytes(),
                    digest_size=KEY_BYTES,
                ).digest()
                for row, length in zip(token_ids, lengths)
            ],
            f"S{KEY_BYTES}",
        )

    def vectors(
        self,
        tokens: Mapping[str, np.ndarray],
        encode: Callable[[dict[str, np.ndarray]], np.ndarray],
    ) -> np.ndarray:
        """Every row's vector: stored ones read, the others encoded and stored.

        Args:
            tokens: dict of (N, T) arrays with `token_ids` and `padding_mask`.
            encode: callable taking a dict like `tokens` of the distinct
                rows not stored yet and returning their (n, width) vectors.

        Returns:
            float32 (N, width), row i for row i of `tokens`.
        """
        keys = self.keys(tokens["token_ids"], tokens["padding_mask"])
        found = np.array([key in self._row_of_key for key in keys.tolist()], bool)
        vectors = np.zeros((len(keys), self.width), "float32")
        if found.any():
            rows = [self._row_of_key[key] for key in keys[found].tolist()]
            vectors[found] = self._stored[rows]
        missing = np.flatnonzero(~found)
        self.hits += int(found.sum())
        if len(missing):
            # Rows repeating a text are encoded once.
            new_keys, first, inverse = np.unique(
                keys[missing], return_index=True, return_inverse=True
            )
            self.misses += len(new_keys)
            encoded = np.asarray(
                encode({field: values[missing[first]] for field, values in tokens.items()}),
                "float32",
            )
            vectors[missing] = encoded[inverse.ravel()]
            self._append(new_keys, encoded)
        return vectors

    def _append(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        start = len(self._keys)
        self._keys = np.concatenate([self._keys, keys])
        self._stored = np.concatenate([self._stored, vectors])
        self._row_of_key.update({key: start + row for row, key in enumerate(keys.tolist())})
        write_atomically(
            self.path,
            lambda temporary: np.savez(temporary, keys=self._keys, vectors=self._stored),
        )
