import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marc_keras.data.interaction_data import InteractionData
from marc_keras.data.kar_split import KARSplit, SplitConfig
from marc_keras.data.movie_lens import MovieLens
from marc_keras.data.text_templates import TextTemplates

DATA_DIR = Path(
    os.environ.get("MARC_KERAS_ML1M_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-1m-half"
)
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "ratings.dat").is_file(), reason=f"no MovieLens data in {DATA_DIR}"
)
SPLITS = ("train", "validation", "test")
BYO_TEMPLATES = TextTemplates(
    user_template="{region!c} user. History: {history}.",
    history_item_template="{name} ({rating:g})",
    item_template="{name}, a {category!l} product",
)


@pytest.fixture(scope="module")
def data():
    return MovieLens.load(DATA_DIR)


@pytest.fixture(scope="module")
def split(data):
    return KARSplit.build(data, MovieLens.text_templates(), SplitConfig())


@pytest.fixture(scope="module")
def ranked(data):
    """Each interaction's position in its user's time order, computed here."""
    events = data.interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    events = events.assign(rank=events.groupby("user_id").cumcount())
    events["length"] = events.groupby("user_id")["item_id"].transform("size")
    events["n_text"] = np.minimum(events["length"] // 2, 30)
    return events


def first_users(full, users=300):
    keep = full.interactions["user_id"].astype(int) <= users
    return InteractionData(full.interactions[keep].reset_index(drop=True), full.items, full.users)


@needs_data
def test_users_are_split_by_fraction_without_overlap(split, data):
    users = {name: set(split.users[name]) for name in SPLITS}
    assert not users["train"] & users["validation"]
    assert not users["train"] & users["test"]
    assert not users["validation"] & users["test"]
    all_users = set(data.interactions["user_id"].unique())
    assert set().union(*users.values()) == all_users
    assert abs(len(users["test"]) - 0.1 * 2999) <= 1
    assert abs(len(users["validation"]) - 0.1 * 2999) <= 1
    assert [len(split.users[name]) for name in SPLITS] == [2399, 300, 300]
    for name in SPLITS:
        assert set(split.samples[name]["user_id"].unique()) == users[name]
    assert set(split.user_texts) == all_users
    assert len(split.item_texts) == 3883


@needs_data
def test_text_half_is_not_sampled(split, ranked):
    samples = pd.concat([split.samples[name] for name in SPLITS])
    assert (
        len(samples)
        == (ranked["length"] - ranked["n_text"]).groupby(ranked["user_id"]).first().sum()
    )
    expected = ranked[ranked["rank"] >= ranked["n_text"]]
    assert len(samples) == len(expected) == 410883
    # ML-1M has one rating per (user, movie), so the pair identifies a row.
    merged = samples.merge(ranked, on=["user_id", "item_id"], suffixes=("", "_raw"))
    assert len(merged) == len(samples)
    assert (merged["rank"] >= merged["n_text"]).all()
    assert (merged["timestamp"] == merged["timestamp_raw"]).all()
    assert (merged["label"] == (merged["rating"] > 3)).all()
    assert [len(split.samples[name]) for name in SPLITS] == [331236, 39793, 39854]


@needs_data
def test_user_text_holds_the_first_half_up_to_30_items(data, split, ranked):
    n_text = ranked.groupby("user_id")["n_text"].first()
    assert n_text.max() == 30
    pattern = re.compile(r", [1-5] stars?(?=; |\.$)")
    counts = pd.Series(
        {user: len(pattern.findall(text)) for user, text in split.user_texts.items()}
    )
    pd.testing.assert_series_equal(counts.sort_index(), n_text.sort_index(), check_names=False)
    titles = data.items.set_index("item_id")["title"]
    user = ranked[ranked["user_id"] == "1"]
    text_half = user.iloc[: user["n_text"].iloc[0]]
    stars = [
        f"{titles[item]}, {rating:g} stars"
        for item, rating in zip(text_half.item_id, text_half.rating)
    ]
    # Newest first by default; "oldest_first" is the order before v2.
    assert split.user_texts["1"] == (
        f"Female, age under 18, K-12 student. Recently watched: {'; '.join(stars[::-1])}."
    )
    assert split.text_halves["1"] == (text_half.item_id.tolist(), text_half.rating.tolist())
    oldest = KARSplit.build(
        first_users(data, 5),
        MovieLens.text_templates(),
        SplitConfig(text_history_order="oldest_first"),
    )
    assert oldest.user_texts["1"].endswith(f"Recently watched: {'; '.join(stars)}.")
    assert split.item_texts["1"] == "Toy Story (1995). Genres: Animation, Children's, Comedy."


@needs_data
def test_history_is_the_preceding_window(split, ranked):
    samples = split.sample("train", 1500, seed=3)
    samples = pd.concat([samples, split.sample("test", 500, seed=3)], ignore_index=True)
    order = ranked.set_index(["user_id", "item_id"])
    sample_rank = order.loc[list(zip(samples.user_id, samples.item_id)), "rank"].to_numpy()
    lengths = samples["history_item_ids"].map(len).to_numpy()
    assert (lengths == np.minimum(sample_rank, 30)).all()
    assert (samples["history_ratings"].map(len).to_numpy() == lengths).all()
    history = samples[["user_id", "timestamp", "history_item_ids", "history_ratings"]].explode(
        ["history_item_ids", "history_ratings"]
    )
    history = history.dropna(subset=["history_item_ids"])
    rows = order.loc[list(zip(history.user_id, history.history_item_ids))]
    position = history.groupby(level=0).cumcount().to_numpy()
    expected_rank = np.repeat(sample_rank - lengths, lengths) + position
    assert (rows["rank"].to_numpy() == expected_rank).all()
    assert (rows["timestamp"].to_numpy() <= history["timestamp"].to_numpy()).all()
    assert (rows["rating"].to_numpy() == history["history_ratings"].to_numpy(float)).all()


@needs_data
def test_seeded_split_and_sampling_are_deterministic(data):
    data = first_users(data)
    templates = MovieLens.text_templates()
    first = KARSplit.build(data, templates, SplitConfig(seed=7))
    again = KARSplit.build(data, templates, SplitConfig(seed=7))
    other = KARSplit.build(data, templates, SplitConfig(seed=8))
    assert first.users == again.users
    assert first.users["test"] != other.users["test"]
    for name in SPLITS:
        pd.testing.assert_frame_equal(first.samples[name], again.samples[name])
    assert first.user_texts == again.user_texts == other.user_texts

    drawn = first.sample("train", 100, seed=1)
    pd.testing.assert_frame_equal(drawn, first.sample("train", 100, seed=1))
    assert not drawn.equals(first.sample("train", 100, seed=2))
    assert len(drawn) == 100
    assert not drawn.duplicated(["user_id", "item_id"]).any()
    everything = first.sample("test", 10**9, seed=1)
    pd.testing.assert_frame_equal(everything, first.samples["test"])
    with pytest.raises(ValueError, match=r"Unknown split 'dev'; use one of \['train'"):
        first.sample("dev", 5, seed=0)


def byo_frames():
    rng = np.random.default_rng(0)
    rows = []
    for user in range(20):
        count = 2 + user
        for step in range(count):
            rows.append(
                {
                    "user_id": f"user{user}",
                    "item_id": f"sku{rng.integers(0, 15)}",
                    # Pairs of equal timestamps exercise the item-id tie break.
                    "timestamp": 1000 + step // 2,
                    "rating": float(rng.integers(1, 6)),
                }
            )
    interactions = pd.DataFrame(rows)
    items = pd.DataFrame(
        {
            "item_id": [f"sku{i}" for i in range(15)],
            "name": [f"Item {i}" for i in range(15)],
            "category": ["toys|games" if i % 2 else "books" for i in range(15)],
        }
    )
    users = pd.DataFrame(
        {"user_id": [f"user{u}" for u in range(25)], "region": ["north", "south"] * 12 + ["east"]}
    )
    return interactions, items, users


def test_byo_csv_and_parquet_give_the_same_split(tmp_path):
    interactions, items, users = byo_frames()
    config = SplitConfig(seed=1, max_text_history=4, max_behaviour_history=3)
    splits = []
    for suffix in ("csv", "parquet"):
        paths = []
        for name, frame in (("interactions", interactions), ("items", items), ("users", users)):
            path = tmp_path / f"{name}.{suffix}"
            getattr(frame, f"to_{suffix}")(path, index=False)
            paths.append(path)
        splits.append(KARSplit.build(InteractionData.from_files(*paths), BYO_TEMPLATES, config))
    from_csv, from_parquet = splits
    assert from_csv.users == from_parquet.users
    assert from_csv.user_texts == from_parquet.user_texts
    assert from_csv.item_texts == from_parquet.item_texts
    for name in SPLITS:
        pd.testing.assert_frame_equal(from_csv.samples[name], from_parquet.samples[name])

    assert [len(from_csv.users[name]) for name in SPLITS] == [16, 2, 2]
    assert from_csv.item_texts["sku1"] == "Item 1, a toys, games product"
    # user0 has 2 interactions: 1 in the text, 1 sample with that 1 as history.
    assert from_csv.user_texts["user0"].startswith("North user. History: Item")
    # user19 has 21 interactions: 4 (capped) in the text, 17 samples.
    user19 = interactions[interactions.user_id == "user19"].sort_values(
        ["timestamp", "item_id"], kind="stable"
    )
    samples = pd.concat([from_csv.samples[name] for name in SPLITS])
    mine = samples[samples.user_id == "user19"]
    assert len(mine) == 17
    assert mine["item_id"].tolist() == user19["item_id"].tolist()[4:]
    assert mine["history_item_ids"].iloc[0] == user19["item_id"].tolist()[1:4]
    assert mine["history_ratings"].iloc[-1] == user19["rating"].tolist()[-4:-1]
    assert from_csv.user_texts["user19"].count("(") == 4
    # Users without interactions get no text and no split.
    assert "user24" not in from_csv.user_texts


def test_label_only_data_without_users_table():
    interactions, items, _ = byo_frames()
    interactions = interactions.drop(columns="rating").assign(
        label=[1, 0] * (len(interactions) // 2)
    )
    data = InteractionData.from_frames(interactions, items)
    templates = TextTemplates(
        user_template="User {user_id}: {history}",
        history_item_template="{name} {stars}",
        item_template="{name}",
    )
    split = KARSplit.build(data, templates, SplitConfig(seed=0))
    assert re.fullmatch(r"User user0: Item \d+ (liked|not liked)", split.user_texts["user0"])
    train = split.samples["train"]
    assert train["rating"].isna().all()
    assert set(train["label"]) == {0, 1}


def test_template_fields_are_checked_before_building():
    interactions, items, users = byo_frames()
    data = InteractionData.from_frames(interactions, items, users)
    templates = TextTemplates(
        user_template="{age} {history}", history_item_template="{name}", item_template="{name}"
    )
    with pytest.raises(ValueError, match=r"user_template uses the placeholder '\{age\}'.*'region'"):
        KARSplit.build(data, templates)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\)"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "must be below 1"),
        ({"max_text_history": -1}, "max_text_history must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
    ],
)
def test_split_config_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SplitConfig(**kwargs)


def test_newest_first_texts_keep_as_many_recent_items_as_fit():
    interactions, items, users = byo_frames()
    data = InteractionData.from_frames(interactions, items, users)
    config = SplitConfig(seed=1, max_text_history=8)
    whole = KARSplit.build(data, BYO_TEMPLATES, config)
    limit = 60

    def fits(texts):
        return np.array([len(text) <= limit for text in texts])

    fitted = KARSplit.build(data, BYO_TEMPLATES, config, fits=fits)
    shortened = 0
    for user, text in whole.user_texts.items():
        items_written = text.split("History: ", 1)[1][:-1].split("; ")
        # Brute force: the longest newest-first prefix of the items that fits.
        expected = text
        for keep in range(len(items_written), -1, -1):
            history = "; ".join(items_written[:keep]) or "nothing yet"
            expected = text.split("History: ", 1)[0] + f"History: {history}."
            if len(expected) <= limit:
                break
        assert fitted.user_texts[user] == expected, user
        shortened += expected != text
    assert fitted.text_stats == {
        "users": len(whole.user_texts),
        "shortened": shortened,
        "truncated": 0,
        "truncated_share": 0.0,
    }
    assert shortened > 0
    assert whole.text_stats is None


def test_overlong_oldest_first_texts_are_counted_and_warned_about():
    interactions, items, users = byo_frames()
    data = InteractionData.from_frames(interactions, items, users)
    config = SplitConfig(seed=1, text_history_order="oldest_first")
    whole = KARSplit.build(data, BYO_TEMPLATES, config)
    with pytest.warns(UserWarning, match="text_history_order = 'newest_first'"):
        split = KARSplit.build(
            data, BYO_TEMPLATES, config, fits=lambda texts: np.array([len(t) <= 40 for t in texts])
        )
    too_long = sum(len(text) > 40 for text in whole.user_texts.values())
    assert split.user_texts == whole.user_texts  # the old order is written whole
    assert split.text_stats["truncated"] == too_long > 0
    assert split.text_stats["shortened"] == 0
