"""Training batches of tokenized user-item pairs in a reproducible order."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import keras
import numpy as np

TOWERS = ("user", "item")


def epoch_steps(pairs: int, batch_size: int, steps_per_epoch: int | None = None) -> int:
    """Batches `PairBatches` serves per epoch: every pair once in full batches
    (the last one partial), or only the first `steps_per_epoch` of them."""
    if steps_per_epoch is not None and int(steps_per_epoch) < 1:
        raise ValueError(f"steps_per_epoch must be >= 1 or None; got {steps_per_epoch}.")
    batches = -(-int(pairs) // int(batch_size))
    return min(batches, int(steps_per_epoch or batches))


def distinct_rows(token_ids: np.ndarray, padding_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) rows -> (distinct row indices (D,), inverse (N,)): equal texts share one row."""
    rows = np.ascontiguousarray(np.where(padding_mask > 0, token_ids, -1))
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


class PairBatches(keras.utils.PyDataset):
    """Shuffled batches of MARC training pairs that pay only for real tokens.

    The tokens a batch costs are what makes MARC training slow on a CPU
    (user texts are about 120 tokens, item texts about 16), so a batch

    - holds each distinct text once (`distinct_texts=True`): the towers
      encode the distinct texts and `{tower}_index` (B,) gathers each pair's
      row back. The loss is the same as encoding every pair's texts.
    - pads each tower to its own longest text, and with `distinct_texts` cuts
      a tower's texts, sorted by length, into buckets of at most
      `bucket_rows` texts, each padded only to its own longest text:
      `{tower}_token_ids` is then a tuple of (n_b, t_b) arrays, and
      `{tower}_index` points into their concatenation.
    - with `items_per_user=K`, holds chunks of up to K labelled items of one
      user each (a user's pairs are cut into chunks of K, the last shorter),
      laid end to end in shuffled order and cut every `batch_size` pairs: a
      batch of 64 with K = 16 held 5.4 users on average on 200k ml-1m pairs,
      more where users have few pairs, and a user text is encoded about once
      per chunk. The HSIC terms then see fewer distinct users: keep several.

    Epoch e visits the pairs in an order drawn from `default_rng((seed, e))`,
    so the order of every epoch is known in advance: a run resumed from a
    checkpoint taken after step k of epoch e trains on exactly the batches
    that the killed run had not reached (`start_step=k`). Pass
    `epoch_callback()` to `fit`: it tells the batches which epoch Keras is
    in (Keras calls `PyDataset.on_epoch_end` also when it first peeks at a
    batch, so counting those calls would be off by one).

    Args:
        inputs: dict name -> array (N, T) of token ids / padding masks, with
            `{tower}_padding_mask` entries for both towers, right-padded.
        labels: float32 array (N,) of click labels.
        batch_size: pairs per batch.
        seed: seed of the per-epoch orders.
        epoch: the epoch the first batch belongs to.
        start_step: batches of `epoch` to skip (already trained).
        items_per_user: K, the most pairs of one user in a chunk, or `None`
            for batches of pairs drawn at random.
        distinct_texts: encode each distinct text of a batch once, in length
            buckets (otherwise every pair's texts, as plain (B, t) arrays).
        bucket_rows: most texts per length bucket.
        steps_per_epoch: serve only the first this many batches of each
            epoch's order (`None`: all): long training on a large pair
            sample in epochs short enough to validate and checkpoint often.
        prefix_encoder: with `distinct_texts`, a callable mapping a tower's
            distinct texts' tokens (dict of (D, T) arrays) to the hidden
            states after a frozen prefix, (D, T, d), such as
            `LoRABackbone.prefix_states`: it runs once here, and batches hold
            `{tower}_prefix_states` buckets instead of token ids.

    Example:
    >>> batches = PairBatches(inputs, labels, batch_size=64, seed=0, items_per_user=16)
    >>> model.fit(batches, epochs=2, shuffle=False, callbacks=[batches.epoch_callback()])
    """

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        start_step: int = 0,
        items_per_user: int | None = None,
        distinct_texts: bool = True,
        bucket_rows: int = 32,
        prefix_encoder: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.labels = np.asarray(labels, "float32")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.items_per_user = None if items_per_user is None else int(items_per_user)
        self.distinct_texts = bool(distinct_texts)
        self.bucket_rows = int(bucket_rows)
        if self.items_per_user is not None and not 1 <= self.items_per_user <= self.batch_size:
            raise ValueError(
                f"items_per_user must be between 1 and batch_size ({self.batch_size}); "
                f"got {items_per_user}."
            )
        if self.bucket_rows < 1:
            raise ValueError(f"bucket_rows must be >= 1; got {bucket_rows}.")
        if prefix_encoder is not None and not self.distinct_texts:
            raise ValueError("prefix_encoder caches distinct texts; it needs distinct_texts=True.")
        self.lengths = {}
        self.text_of_pair = {}
        self.prefix_states = {}
        for tower in TOWERS:
            token_ids, mask = inputs[f"{tower}_token_ids"], inputs[f"{tower}_padding_mask"]
            self.lengths[tower] = mask.sum(axis=1)
            if self.distinct_texts or (tower == "user" and self.items_per_user):
                first, self.text_of_pair[tower] = distinct_rows(token_ids, mask)
                if prefix_encoder is not None:
                    # (D, T, d), row j = distinct text j
                    self.prefix_states[tower] = prefix_encoder(
                        {"token_ids": token_ids[first], "padding_mask": mask[first]}
                    )
        if self.items_per_user:
            # Pair rows of each user, in row order: user u's pairs are
            # rows_by_user[starts[u]:starts[u + 1]].
            self._rows_by_user = np.argsort(self.text_of_pair["user"], kind="stable")
            counts = np.bincount(self.text_of_pair["user"])
            self._user_starts = np.concatenate([[0], np.cumsum(counts)])
        self.first_epoch = self.epoch = int(epoch)
        self.first_step = self.start_step = int(start_step)
        self._batches = self._epoch_batches(self.epoch)
        self.steps_per_epoch = epoch_steps(len(self.labels), self.batch_size, steps_per_epoch)
        if not 0 <= self.start_step < self.steps_per_epoch:
            raise ValueError(
                f"start_step must be in [0, {self.steps_per_epoch}) for {len(self.labels)} pairs "
                f"in batches of {self.batch_size}; got {start_step}."
            )

    def _epoch_batches(self, epoch):
        """The epoch's batches, as arrays of pair rows."""
        rng = np.random.default_rng((self.seed, epoch))
        if not self.items_per_user:
            order = rng.permutation(len(self.labels))
            return [
                order[start : start + self.batch_size]
                for start in range(0, len(order), self.batch_size)
            ]
        chunks = []
        for user in range(len(self._user_starts) - 1):
            rows = rng.permutation(
                self._rows_by_user[self._user_starts[user] : self._user_starts[user + 1]]
            )
            chunks += [
                rows[start : start + self.items_per_user]
                for start in range(0, len(rows), self.items_per_user)
            ]
        # Shuffled chunks laid end to end and cut every batch_size pairs: every
        # batch is full, and users with few pairs simply share a batch with more.
        order = np.concatenate([chunks[index] for index in rng.permutation(len(chunks))])
        return [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]

    def __len__(self):
        return self.steps_per_epoch - self.start_step

    def _tower_batch(self, tower, rows):
        token_ids = self.inputs[f"{tower}_token_ids"]
        mask = self.inputs[f"{tower}_padding_mask"]
        lengths = self.lengths[tower]
        if not self.distinct_texts:
            # (b, T) -> (b, t): t is the longest text of this batch.
            width = max(int(lengths[rows].max()), 1)
            return {
                f"{tower}_token_ids": token_ids[rows, :width],
                f"{tower}_padding_mask": mask[rows, :width],
            }
        texts, first, index = np.unique(
            self.text_of_pair[tower][rows], return_index=True, return_inverse=True
        )
        text_rows = rows[first]
        by_length = np.argsort(lengths[text_rows], kind="stable")
        position = np.empty(len(texts), "int32")
        position[by_length] = np.arange(len(texts), dtype="int32")
        states = self.prefix_states.get(tower)
        field = "token_ids" if states is None else "prefix_states"
        values, masks = [], []
        for start in range(0, len(texts), self.bucket_rows):
            in_bucket = by_length[start : start + self.bucket_rows]
            bucket = text_rows[in_bucket]
            width = max(int(lengths[bucket].max()), 1)
            if states is None:
                values.append(token_ids[bucket, :width])  # (n_b, t_b)
            else:
                values.append(states[texts[in_bucket], :width])  # (n_b, t_b, d)
            masks.append(mask[bucket, :width])
        return {
            f"{tower}_{field}": tuple(values),
            f"{tower}_padding_mask": tuple(masks),
            f"{tower}_index": position[index.ravel()],  # (B,) rows of the buckets' concatenation
        }

    def __getitem__(self, index):
        rows = self._batches[self.start_step + index]
        batch = {}
        for tower in TOWERS:
            batch.update(self._tower_batch(tower, rows))
        return batch, self.labels[rows][:, None]

    def pair_rows(self, index: int) -> np.ndarray:
        """The pair rows (into `inputs` and `labels`) that batch `index` holds."""
        return self._batches[self.start_step + index]

    def set_epoch(self, epoch: int) -> None:
        """Serves `epoch`'s batches; only the first epoch starts at `start_step`."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.start_step = self.first_step if epoch == self.first_epoch else 0
            self._batches = self._epoch_batches(self.epoch)

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A Keras callback that calls `set_epoch` at the start of every epoch."""
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self.set_epoch(epoch)
        )
