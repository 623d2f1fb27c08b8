import numpy as np
import pytest

from marc_keras.pair_batches import PairBatches


def _pairs(count=10, length=6):
    rng = np.random.default_rng(0)
    lengths = {"user": rng.integers(1, length + 1, count), "item": rng.integers(1, 3, count)}
    inputs = {}
    for tower, sizes in lengths.items():
        mask = (np.arange(length)[None, :] < sizes[:, None]).astype("int32")
        inputs[f"{tower}_padding_mask"] = mask
        # Row i's ids are i + 1, so a batch tells which rows it holds.
        inputs[f"{tower}_token_ids"] = mask * (np.arange(count)[:, None] + 1)
    return inputs, np.arange(count, dtype="float32") % 2


def _rows(batch):
    inputs, _ = batch
    return inputs["user_token_ids"][:, 0] - 1


def test_each_epoch_visits_every_pair_once_in_its_own_reproducible_order():
    inputs, labels = _pairs()
    batches = PairBatches(inputs, labels, batch_size=4, seed=3)
    assert len(batches) == 3
    first = np.concatenate([_rows(batches[index]) for index in range(len(batches))])
    assert sorted(first) == list(range(10))
    batches.set_epoch(1)
    second = np.concatenate([_rows(batches[index]) for index in range(len(batches))])
    assert sorted(second) == list(range(10)) and not np.array_equal(first, second)
    again = PairBatches(inputs, labels, batch_size=4, seed=3, epoch=1)
    np.testing.assert_array_equal(np.concatenate([_rows(again[i]) for i in range(3)]), second)


def test_starting_mid_epoch_serves_exactly_the_batches_not_yet_trained():
    inputs, labels = _pairs()
    whole = PairBatches(inputs, labels, batch_size=4, seed=0, epoch=2)
    rest = PairBatches(inputs, labels, batch_size=4, seed=0, epoch=2, start_step=1)
    assert len(rest) == 2
    for index in range(2):
        np.testing.assert_array_equal(_rows(rest[index]), _rows(whole[index + 1]))
    rest.set_epoch(3)
    assert rest.epoch == 3 and rest.start_step == 0
    np.testing.assert_array_equal(
        _rows(rest[0]), _rows(PairBatches(inputs, labels, 4, seed=0, epoch=3)[0])
    )


def test_batches_are_trimmed_per_tower_to_their_longest_text_and_labels_are_columns():
    inputs, labels = _pairs()
    batches = PairBatches(inputs, labels, batch_size=4, seed=0)
    for index in range(len(batches)):
        batch, batch_labels = batches[index]
        rows = _rows((batch, batch_labels))
        for tower in ("user", "item"):
            longest = inputs[f"{tower}_padding_mask"][rows].sum(axis=1).max()
            assert batch[f"{tower}_token_ids"].shape == (len(rows), longest)
            np.testing.assert_array_equal(
                batch[f"{tower}_token_ids"], inputs[f"{tower}_token_ids"][rows, :longest]
            )
        np.testing.assert_array_equal(batch_labels, labels[rows][:, None])


def test_a_start_step_past_the_epoch_is_an_error():
    inputs, labels = _pairs()
    with pytest.raises(ValueError, match=r"start_step must be in \[0, 3\)"):
        PairBatches(inputs, labels, batch_size=4, seed=0, start_step=3)
