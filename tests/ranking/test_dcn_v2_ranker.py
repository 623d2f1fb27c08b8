import json
import types

import numpy as np
import pytest

import keras
from marc_keras.config import DownstreamConfig
from marc_keras.ranking.dcn_v2_ranker import DCNv2Ranker
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator

SIZES = {"train": 3000, "validation": 750, "test": 750}


def synthetic_features(unique_items=False, seed=0, sizes=SIZES):
    """Samples clicked when their item is "even" (10% label noise).

    With `unique_items`, every sample gets an item index of its own, so item
    ids carry nothing across splits and only an external item vector can
    tell even from odd items. Returns the features and that vector table.
    """
    rng = np.random.default_rng(seed)
    total = sum(sizes.values())
    even = rng.random(total) < 0.5
    item_index = (
        np.arange(1, total + 1)
        if unique_items
        else np.where(even, 2, 1) * rng.integers(1, 20, total)
    )
    num_items = int(item_index.max()) + 1
    item_vectors = np.zeros((num_items, 4), "float32")
    item_vectors[item_index, 0] = even
    labels = (even ^ (rng.random(total) < 0.1)).astype("float32")
    features = types.SimpleNamespace(
        inputs={},
        labels={},
        item_genres=rng.integers(0, 4, (num_items, 2)).astype("int32"),
        genre_vocabulary={f"g{i}": i for i in range(1, 4)},
        user_vocabulary={f"u{i}": i for i in range(1, 51)},
        user_field_sizes=[3],
    )
    start = 0
    for name, size in sizes.items():
        rows = slice(start, start + size)
        start += size
        features.inputs[name] = {
            "user": rng.integers(1, 51, size).astype("int32"),
            "item": item_index[rows].astype("int32"),
            "history_items": rng.integers(0, num_items, (size, 5)).astype("int32"),
            "history_ratings": rng.integers(1, 6, (size, 5)).astype("int32"),
            "user_fields": rng.integers(1, 3, (size, 1)).astype("int32"),
        }
        features.labels[name] = labels[rows]
    return features, item_vectors


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    features, item_vectors = synthetic_features(sizes={"train": 100, "validation": 50, "test": 50})
    ranker = DCNv2Ranker.from_features(features, item_vectors=item_vectors)
    expected = ranker.predict(features.inputs["test"], verbose=0)
    ranker.save(tmp_path / "ranker.keras")
    loaded = keras.saving.load_model(tmp_path / "ranker.keras")
    np.testing.assert_array_equal(loaded.predict(features.inputs["test"], verbose=0), expected)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        ranker.get_config(), sort_keys=True
    )


def test_learns_a_signal_in_the_item_id():
    features, _ = synthetic_features()
    config = DownstreamConfig(max_epochs=4, batch_size=128, seeds=(0,))
    _, test_auc, _ = DownstreamEvaluator(features, config, log=lambda _: None).train_one(0)
    assert test_auc > 0.75  # the 10% label noise caps it near 0.9


def test_a_vector_carrying_the_signal_beats_no_vector():
    features, item_vectors = synthetic_features(unique_items=True)
    config = DownstreamConfig(max_epochs=3, batch_size=128, seeds=(0, 1))
    rows = DownstreamEvaluator(features, config, log=lambda _: None).evaluate(
        {"dcnv2": None, "vector": lambda seed: (None, item_vectors)}
    )
    by_name = {row["name"]: row for row in rows}
    assert by_name["vector"]["auc_mean"] > 0.85
    assert by_name["dcnv2"]["auc_mean"] < 0.6
    assert by_name["vector"]["relaimpr"] > 0.5
    assert len(by_name["vector"]["aucs"]) == 2


def test_evaluator_is_deterministic_under_a_seed():
    features, _ = synthetic_features(sizes={"train": 400, "validation": 100, "test": 100})
    config = DownstreamConfig(max_epochs=1, batch_size=64, seeds=(3,), train_samples=300)
    first = DownstreamEvaluator(features, config, log=lambda _: None).train_one(3)[1]
    second = DownstreamEvaluator(features, config, log=lambda _: None).train_one(3)[1]
    assert first == pytest.approx(second, abs=1e-7)


def test_an_interrupted_evaluation_resumes_from_its_progress_file(tmp_path, monkeypatch):
    features, _ = synthetic_features(sizes={"train": 600, "validation": 200, "test": 200})
    config = DownstreamConfig(max_epochs=1, batch_size=128, seeds=(0, 1))
    progress = tmp_path / "progress.json"
    first = DownstreamEvaluator(
        features, config, log=lambda _: None, progress_path=progress, progress_fingerprint="v1"
    )
    rows = first.evaluate({"dcnv2": None})
    saved = json.loads(progress.read_text())
    assert sorted(saved["results"]) == ["dcnv2/0", "dcnv2/1"]

    resumed = DownstreamEvaluator(
        features, config, log=lambda _: None, progress_path=progress, progress_fingerprint="v1"
    )
    monkeypatch.setattr(
        resumed, "train_one", lambda *args: pytest.fail("finished results must not be retrained")
    )
    assert resumed.evaluate({"dcnv2": None})[0]["aucs"] == rows[0]["aucs"]

    other_vectors = DownstreamEvaluator(
        features, config, log=lambda _: None, progress_path=progress, progress_fingerprint="v2"
    )
    trained = []
    monkeypatch.setattr(
        other_vectors, "train_one", lambda seed, *tables: trained.append(seed) or (None, 0.6, 0.7)
    )
    other_vectors.evaluate({"dcnv2": None})
    assert trained == [0, 1]
