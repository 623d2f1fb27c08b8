import pandas as pd
import pytest

from marc_keras.data.interaction_data import InteractionData
from marc_keras.generative.sequential_split import SequentialSplit

# (user, item, rating, timestamp), rows shuffled across users and time.
# u1: i1 i2 i3 i4 i5 by time (i3 disliked).
# u2: i3, then i6 and i2 at the same time: i6 comes first in the file.
# u3: only two items (dropped).
# u4: i5 i4 i1 i6 by time (i4 disliked).
ROWS = [
    ("u4", "i1", 4.0, 3),
    ("u1", "i4", 5.0, 40),
    ("u2", "i6", 4.0, 200),
    ("u3", "i1", 5.0, 7),
    ("u1", "i1", 5.0, 10),
    ("u4", "i6", 5.0, 4),
    ("u1", "i5", 5.0, 50),
    ("u2", "i3", 4.0, 100),
    ("u1", "i3", 2.0, 30),
    ("u4", "i5", 5.0, 1),
    ("u2", "i2", 4.0, 200),
    ("u3", "i2", 5.0, 8),
    ("u1", "i2", 5.0, 20),
    ("u4", "i4", 1.0, 2),
]
ORDERED = {  # each kept user's items by time, ties in file order
    "u1": ["i1", "i2", "i3", "i4", "i5"],
    "u2": ["i3", "i6", "i2"],
    "u4": ["i5", "i4", "i1", "i6"],
}


def _data(rows=ROWS):
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame(
        {"item_id": [f"i{n}" for n in range(1, 7)], "title": [f"T{n}" for n in range(1, 7)]}
    )
    return InteractionData.from_frames(interactions, items)


def _rows(frame):
    assert frame.columns.tolist() == ["user_id", "history", "target"]
    return list(frame.itertuples(index=False, name=None))


def _reference(ordered, history_length):
    """Per user: every position >= 1 is a window of the items before it; last two held out."""
    parts = {"train": [], "validation": [], "test": []}
    for user in sorted(ordered):
        items = ordered[user]
        for position in range(1, len(items)):
            window = (user, tuple(items[max(0, position - history_length) : position]))
            part = {len(items) - 1: "test", len(items) - 2: "validation"}.get(position, "train")
            parts[part].append((*window, items[position]))
    return parts


def test_leave_one_out_windows_by_hand():
    split = SequentialSplit.build(_data(), history_length=2)
    assert split.history_length == 2
    assert _rows(split.train) == [
        ("u1", ("i1",), "i2"),
        ("u1", ("i1", "i2"), "i3"),
        ("u4", ("i5",), "i4"),
    ]
    assert _rows(split.validation) == [
        ("u1", ("i2", "i3"), "i4"),
        ("u2", ("i3",), "i6"),  # i6 and i2 share a timestamp: file order decides
        ("u4", ("i5", "i4"), "i1"),
    ]
    assert _rows(split.test) == [
        ("u1", ("i3", "i4"), "i5"),
        ("u2", ("i3", "i6"), "i2"),
        ("u4", ("i4", "i1"), "i6"),
    ]


@pytest.mark.parametrize("history_length", [1, 3, 10])
def test_windows_equal_a_loop_reference(history_length):
    split = SequentialSplit.build(_data(), history_length=history_length)
    expected = _reference(ORDERED, history_length)
    for part in ("train", "validation", "test"):
        assert _rows(getattr(split, part)) == expected[part], part
    # Every history holds at most history_length items, and no training
    # target comes after the user's held-out items.
    longest = max(frame["history"].map(len).max() for frame in (split.train, split.test))
    assert longest == min(history_length, 4)  # u1's test target has four items before it
    for user, items in ORDERED.items():
        train_targets = split.train.loc[split.train["user_id"] == user, "target"].tolist()
        assert train_targets == items[1:-2]


def test_ties_keep_the_file_order():
    # The same rows with u2's tied pair swapped in the file swap in the split.
    swapped = list(ROWS)
    first, second = swapped.index(("u2", "i6", 4.0, 200)), swapped.index(("u2", "i2", 4.0, 200))
    swapped[first], swapped[second] = swapped[second], swapped[first]
    split = SequentialSplit.build(_data(swapped), history_length=2)
    u2 = split.test[split.test["user_id"] == "u2"]
    assert _rows(u2) == [("u2", ("i3", "i2"), "i6")]


def test_positives_only_drops_disliked_items_first():
    # Ratings above 3 are positives: u1 loses i3 and u4 loses i4; u2 keeps all.
    split = SequentialSplit.build(_data(), history_length=2, positives_only=True)
    expected = _reference(
        {"u1": ["i1", "i2", "i4", "i5"], "u2": ORDERED["u2"], "u4": ["i5", "i1", "i6"]}, 2
    )
    assert _rows(split.train) == expected["train"] == [("u1", ("i1",), "i2")]
    assert _rows(split.validation) == expected["validation"]
    assert _rows(split.test) == expected["test"]
    assert _rows(split.test)[2] == ("u4", ("i5", "i1"), "i6")


def test_sample_is_a_reproducible_subset():
    u5 = [("u5", f"i{n}", 5.0, n) for n in range(1, 7)]  # three more training windows
    split = SequentialSplit.build(_data(ROWS + u5), history_length=2)
    train = _rows(split.train)
    assert len(train) == 6
    first = split.sample("train", 4, seed=3)
    assert _rows(first) == _rows(split.sample("train", 4, seed=3))
    assert len(set(_rows(first))) == 4 and set(_rows(first)) <= set(train)
    assert first.index.tolist() == [0, 1, 2, 3]
    assert len({tuple(_rows(split.sample("train", 4, seed=seed))) for seed in range(6)}) > 1
    for count in (None, 6, 100):
        everything = split.sample("train", count, seed=1)
        assert sorted(_rows(everything)) == sorted(train)
        assert _rows(everything) == _rows(split.sample("train", None, seed=1))
    assert sorted(_rows(split.sample("test", None))) == sorted(_rows(split.test))
    assert _rows(split.sample("validation", 0)) == []


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="history_length must be >= 1; got 0"):
        SequentialSplit.build(_data(), history_length=0)
    two_each = [row for row in ROWS if row[0] in ("u2", "u3")][1:]
    assert sorted(row[0] for row in two_each) == ["u2", "u2", "u3", "u3"]
    with pytest.raises(ValueError, match="No user has three or more interactions; leave-one-out"):
        SequentialSplit.build(_data(two_each))
    # Everybody has three items, but nobody likes three.
    one_like = [(user, item, 5.0 if item == "i1" else 1.0, t) for user, item, _, t in ROWS]
    SequentialSplit.build(_data(one_like))
    with pytest.raises(ValueError, match="interactions labelled 1; leave-one-out"):
        SequentialSplit.build(_data(one_like), positives_only=True)
    split = SequentialSplit.build(_data())
    with pytest.raises(ValueError, match="part must be 'train', 'validation' or 'test'; got 'val'"):
        split.sample("val", 2)
