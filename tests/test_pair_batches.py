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
    batches = PairBatches(inputs, labels, batch_size=4, seed=3, distinct_texts=False)
    assert len(batches) == 3
    first = np.concatenate([_rows(batches[index]) for index in range(len(batches))])
    assert sorted(first) == list(range(10))
    batches.set_epoch(1)
    second = np.concatenate([_rows(batches[index]) for index in range(len(batches))])
    assert sorted(second) == list(range(10)) and not np.array_equal(first, second)
    again = PairBatches(inputs, labels, batch_size=4, seed=3, epoch=1, distinct_texts=False)
    np.testing.assert_array_equal(np.concatenate([_rows(again[i]) for i in range(3)]), second)


def test_starting_mid_epoch_serves_exactly_the_batches_not_yet_trained():
    inputs, labels = _pairs()
    whole = PairBatches(inputs, labels, batch_size=4, seed=0, epoch=2, distinct_texts=False)
    rest = PairBatches(
        inputs, labels, batch_size=4, seed=0, epoch=2, start_step=1, distinct_texts=False
    )
    assert len(rest) == 2
    for index in range(2):
        np.testing.assert_array_equal(_rows(rest[index]), _rows(whole[index + 1]))
    rest.set_epoch(3)
    assert rest.epoch == 3 and rest.start_step == 0
    np.testing.assert_array_equal(
        _rows(rest[0]),
        _rows(PairBatches(inputs, labels, 4, seed=0, epoch=3, distinct_texts=False)[0]),
    )


def test_batches_are_trimmed_per_tower_to_their_longest_text_and_labels_are_columns():
    inputs, labels = _pairs()
    batches = PairBatches(inputs, labels, batch_size=4, seed=0, distinct_texts=False)
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


def _user_pairs(users=(5, 3, 8, 1), length=6):
    """Pairs of a few users (user u's text is u + 1 repeated), each with distinct items."""
    user_of_pair = np.repeat(np.arange(len(users)), users)
    count = len(user_of_pair)
    rng = np.random.default_rng(1)
    inputs = {}
    for tower, text_of_pair, sizes in (
        ("user", user_of_pair, 2 + user_of_pair % 4),
        ("item", np.arange(count), rng.integers(1, length + 1, count)),
    ):
        mask = (np.arange(length)[None, :] < sizes[:, None]).astype("int32")
        inputs[f"{tower}_padding_mask"] = mask
        inputs[f"{tower}_token_ids"] = mask * (text_of_pair[:, None] + 1)
    return inputs, (np.arange(count) % 2).astype("float32"), user_of_pair


def _gathered(batch, tower):
    """Each pair's (trimmed) token ids, gathered back from the distinct-text buckets."""
    ids = batch[f"{tower}_token_ids"]
    width = max(part.shape[1] for part in ids)
    rows = np.concatenate([np.pad(part, ((0, 0), (0, width - part.shape[1]))) for part in ids])
    return rows[batch[f"{tower}_index"]]


def test_grouped_batches_hold_few_users_each_and_every_pair_once_per_epoch():
    inputs, labels, user_of_pair = _user_pairs()
    batches = PairBatches(inputs, labels, batch_size=4, seed=0, items_per_user=2)
    # 17 pairs in chunks of at most 2 pairs of one user: 3 + 2 + 4 + 1 = 10
    # chunks, laid end to end and cut every 4 pairs.
    assert len(batches) == 5
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        seen, user_encodings = [], 0
        for index in range(len(batches)):
            rows = batches.pair_rows(index)
            assert len(rows) == (4 if index < 4 else 1)
            seen += list(rows)
            batch, batch_labels = batches[index]
            np.testing.assert_array_equal(batch_labels[:, 0], labels[rows])
            for tower in ("user", "item"):
                texts = _gathered(batch, tower)
                expected = inputs[f"{tower}_token_ids"][rows, : texts.shape[1]]
                np.testing.assert_array_equal(texts, expected)
            # Each distinct user text of a batch is encoded once.
            users = len(np.unique(user_of_pair[rows]))
            assert sum(len(part) for part in batch["user_token_ids"]) == users
            user_encodings += users
        assert sorted(seen) == list(range(len(labels)))
        # A user is encoded once per chunk at most, plus once per chunk a batch cut splits.
        assert user_encodings <= 10 + len(batches) - 1
        # Chunks stay together: no more runs of one user than chunks.
        order = user_of_pair[np.concatenate(seen_batches(batches))]
        runs = np.split(order, np.flatnonzero(np.diff(order)) + 1)
        assert len(runs) <= 10
    resumed = PairBatches(inputs, labels, 4, seed=0, epoch=1, start_step=2, items_per_user=2)
    np.testing.assert_array_equal(resumed.pair_rows(0), batches.pair_rows(2))


def seen_batches(batches):
    return [batches.pair_rows(index) for index in range(len(batches))]


def test_distinct_texts_are_bucketed_by_length_each_bucket_padded_to_its_longest():
    inputs, labels, _ = _user_pairs(users=(17,))
    batches = PairBatches(inputs, labels, batch_size=17, seed=0, bucket_rows=5)
    batch, _ = batches[0]
    widths = [part.shape[1] for part in batch["item_token_ids"]]
    assert [len(part) for part in batch["item_token_ids"]] == [5, 5, 5, 2]
    assert widths == sorted(widths)
    for ids, mask in zip(batch["item_token_ids"], batch["item_padding_mask"]):
        assert mask.sum(axis=1).max() == ids.shape[1]


def test_bad_grouping_settings_are_explained():
    inputs, labels, _ = _user_pairs()
    with pytest.raises(ValueError, match="items_per_user must be between 1 and batch_size"):
        PairBatches(inputs, labels, batch_size=4, seed=0, items_per_user=5)
    with pytest.raises(ValueError, match="bucket_rows must be >= 1"):
        PairBatches(inputs, labels, batch_size=4, seed=0, bucket_rows=0)


def test_steps_per_epoch_serves_the_start_of_each_epochs_own_order():
    inputs, labels, _ = _user_pairs()
    whole = PairBatches(inputs, labels, batch_size=4, seed=0, items_per_user=2)
    capped = PairBatches(inputs, labels, batch_size=4, seed=0, items_per_user=2, steps_per_epoch=2)
    assert len(capped) == 2
    for epoch in (0, 1):
        whole.set_epoch(epoch)
        capped.set_epoch(epoch)
        for index in range(2):
            np.testing.assert_array_equal(capped.pair_rows(index), whole.pair_rows(index))
    resumed = PairBatches(inputs, labels, 4, seed=0, epoch=1, start_step=1, steps_per_epoch=2)
    assert len(resumed) == 1
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        PairBatches(inputs, labels, 4, seed=0, steps_per_epoch=0)
