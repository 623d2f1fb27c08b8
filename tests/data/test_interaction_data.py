import numpy as np
import pandas as pd
import pytest

from marc_keras.data.interaction_data import InteractionData

INTERACTIONS = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u2", "u2", "u3"],
        "item_id": ["007", "i2", "007", "i3", "i2"],
        "rating": [5.0, 3.0, 4.0, 1.0, 3.5],
        "timestamp": [100, 200, 150, 150, 50],
    }
)
ITEMS = pd.DataFrame(
    {
        "item_id": ["007", "i2", "i3", "i4"],
        "title": ["Spy", "Two", "Three", None],
        "year": [1962, 1990, 2000, 2010],
    }
)
USERS = pd.DataFrame({"user_id": ["u1", "u2", "u3", "u9"], "city": ["A", "B", "C", "D"]})


def write(frame, path):
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.fixture(params=["csv", "parquet"])
def files(request, tmp_path):
    suffix = f".{request.param}"
    return (
        write(INTERACTIONS, tmp_path / f"interactions{suffix}"),
        write(ITEMS, tmp_path / f"items{suffix}"),
        write(USERS, tmp_path / f"users{suffix}"),
    )


def test_from_files_normalizes_and_derives_labels(files):
    data = InteractionData.from_files(*files)
    interactions = data.interactions
    assert list(interactions.columns) == ["user_id", "item_id", "rating", "label", "timestamp"]
    assert interactions["item_id"].tolist() == ["007", "i2", "007", "i3", "i2"]
    assert interactions["label"].tolist() == [1, 0, 1, 0, 1]
    assert interactions["label"].dtype == np.int8
    assert interactions["rating"].dtype == np.float64
    assert interactions["timestamp"].dtype == np.int64
    assert data.items["title"].tolist() == ["Spy", "Two", "Three", ""]
    assert data.items["year"].tolist() == ["1962", "1990", "2000", "2010"]
    assert data.users["user_id"].tolist() == ["u1", "u2", "u3", "u9"]
    assert data.describe() == {
        "users": 4,
        "users_with_interactions": 3,
        "items": 4,
        "items_with_interactions": 3,
        "interactions": 5,
        "positive_rate": 0.6,
    }


def test_csv_and_parquet_give_the_same_data(tmp_path):
    loaded = []
    for suffix in (".csv", ".parquet"):
        loaded.append(
            InteractionData.from_files(
                write(INTERACTIONS, tmp_path / f"i{suffix}"),
                write(ITEMS, tmp_path / f"t{suffix}"),
                write(USERS, tmp_path / f"u{suffix}"),
            )
        )
    csv_data, parquet_data = loaded
    for table in ("interactions", "items", "users"):
        left = getattr(csv_data, table).astype(object)
        right = getattr(parquet_data, table).astype(object)
        pd.testing.assert_frame_equal(left, right)


def test_label_threshold_and_integer_ids(tmp_path):
    interactions = INTERACTIONS.assign(user_id=[1, 1, 2, 2, 3], item_id=[7, 2, 7, 3, 2])
    items = ITEMS.assign(item_id=[7, 2, 3, 4])
    data = InteractionData.from_files(
        write(interactions, tmp_path / "i.parquet"),
        write(items, tmp_path / "t.csv"),
        label_threshold=3.5,
    )
    assert data.interactions["label"].tolist() == [1, 0, 1, 0, 0]
    assert data.interactions["user_id"].tolist() == ["1", "1", "2", "2", "3"]
    assert data.users is None
    assert data.describe()["users"] == 3


def test_labels_only_and_labels_with_ratings(tmp_path):
    labels_only = INTERACTIONS.drop(columns="rating").assign(label=[1, 0, 0, 1, 1])
    data = InteractionData.from_files(
        write(labels_only, tmp_path / "i.csv"), write(ITEMS, tmp_path / "t.csv")
    )
    assert data.interactions["rating"].isna().all()
    assert data.interactions["label"].tolist() == [1, 0, 0, 1, 1]

    # A given label wins over the rating; unrated rows are fine with a label.
    both = INTERACTIONS.assign(label=[0, 0, 0, 1, 1], rating=[5.0, None, 4.0, 1.0, 3.5])
    data = InteractionData.from_files(
        write(both, tmp_path / "b.parquet"), write(ITEMS, tmp_path / "t.csv")
    )
    assert data.interactions["label"].tolist() == [0, 0, 0, 1, 1]
    assert np.isnan(data.interactions["rating"][1])


def test_datetime_timestamps_become_unix_seconds(tmp_path):
    interactions = INTERACTIONS.assign(timestamp=pd.to_datetime([100, 200, 150, 150, 50], unit="s"))
    data = InteractionData.from_files(
        write(interactions, tmp_path / "i.parquet"), write(ITEMS, tmp_path / "t.parquet")
    )
    assert data.interactions["timestamp"].tolist() == [100, 200, 150, 150, 50]


def test_constructor_checks_the_schema():
    with pytest.raises(ValueError, match="from_frames"):
        InteractionData(interactions=INTERACTIONS, items=ITEMS)


def bad_case(tmp_path, interactions=INTERACTIONS, items=ITEMS, users=None, suffix=".csv"):
    paths = [
        write(interactions, tmp_path / f"interactions{suffix}"),
        write(items, tmp_path / "items.csv"),
    ]
    if users is not None:
        paths.append(write(users, tmp_path / "users.csv"))
    return paths


@pytest.mark.parametrize(
    "change, pattern",
    [
        (
            {"interactions": INTERACTIONS.drop(columns="timestamp")},
            r"interactions\.csv: missing the columns \['timestamp'\]",
        ),
        (
            {"interactions": INTERACTIONS.drop(columns="rating")},
            r"interactions\.csv: has neither a 'rating' nor a 'label' column",
        ),
        (
            {"interactions": INTERACTIONS.assign(rating=["5", "three", "4", "1", "3"])},
            r"interactions\.csv: column 'rating' has 1 non-numeric values \(rows 2.*'three'",
        ),
        (
            {"interactions": INTERACTIONS.assign(timestamp=[1, 2, "yesterday", 4, 5])},
            r"interactions\.csv: column 'timestamp' has 1 non-numeric.*rows 3.*Unix seconds",
        ),
        (
            {"interactions": INTERACTIONS.assign(timestamp=[1, 2.5, 3, 4, 5])},
            r"column 'timestamp' has 1 empty or fractional values \(rows 2\)",
        ),
        (
            {"interactions": INTERACTIONS.assign(label=[1, 0, 2, 1, -1])},
            r"interactions\.csv: column 'label' has 2 values not in \{0, 1\} \(rows 3, 5",
        ),
        (
            {"interactions": INTERACTIONS.assign(rating=[5, None, 4, 1, 3])},
            r"column 'rating' is empty in 1 rows \(rows 2\).*add a 0/1 'label'",
        ),
        (
            {"interactions": INTERACTIONS.assign(item_id=["007", "i2", "x1", "x2", "x1"])},
            (
                r"interactions\.csv: column 'item_id' refers to 2 ids that are not in "
                r".*items\.csv \(e\.g\. \['x1', 'x2'\]; rows 3, 4, 5\)"
            ),
        ),
        (
            {"interactions": INTERACTIONS.assign(user_id=["u1", None, "u2", "u2", "u3"])},
            r"column 'user_id' is empty in 1 rows \(rows 2",
        ),
        (
            {"interactions": INTERACTIONS.iloc[:0]},
            r"interactions\.csv: has no rows",
        ),
        (
            {"items": pd.concat([ITEMS, ITEMS.iloc[[1]]])},
            r"items\.csv: column 'item_id' has 1 duplicate ids \(e\.g\. \['i2'\]; "
            r"repeated in rows 5,",
        ),
        (
            {"items": ITEMS.rename(columns={"item_id": "movie"})},
            r"items\.csv: missing the column 'item_id'",
        ),
        (
            {"users": pd.concat([USERS, USERS.iloc[[0]]])},
            r"users\.csv: column 'user_id' has 1 duplicate ids \(e\.g\. \['u1'\]; "
            r"repeated in rows 5,",
        ),
        (
            {"users": USERS.iloc[:2]},
            r"column 'user_id' refers to 1 ids that are not in .*users\.csv \(e\.g\. \['u3'\]",
        ),
    ],
)
def test_bad_inputs_name_the_file_and_column(tmp_path, change, pattern):
    with pytest.raises(ValueError, match=pattern):
        InteractionData.from_files(*bad_case(tmp_path, **change))


def test_missing_file_and_unknown_suffix(tmp_path):
    items = write(ITEMS, tmp_path / "items.csv")
    with pytest.raises(ValueError, match=r"interactions file .*nope\.csv does not exist"):
        InteractionData.from_files(tmp_path / "nope.csv", items)
    with pytest.raises(ValueError, match=r"users file .*users\.parquet does not exist"):
        InteractionData.from_files(
            write(INTERACTIONS, tmp_path / "i.csv"), items, tmp_path / "users.parquet"
        )
    (tmp_path / "i.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"i\.xlsx has an unknown suffix; use one of \['\.csv'"):
        InteractionData.from_files(tmp_path / "i.xlsx", items)
