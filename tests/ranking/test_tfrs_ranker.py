import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
from marc_keras.config import DownstreamConfig
from marc_keras.config.ranker_tier import TIERS
from marc_keras.export.embedding_store import EmbeddingStore
from marc_keras.ranking.ranking_features import RankingFeatures, training_rows
from marc_keras.ranking.tfrs_ranker import TFRSRanker, check_store_coverage, read_store_vectors

SIZES = {"train": 3000, "validation": 600, "test": 600}
USERS = {"train": range(1, 121), "validation": range(121, 141), "test": range(141, 161)}
NUM_ITEMS, DIM = 40, 8
# Adaptors off: nothing hides the stored signal in the small problem.
PLAIN = dict(adaptor_input_dropout=0.0, adaptor_weight_decay=0.0, row_adaptors={})


def write_store(path, ids, vectors, column="compressed"):
    with EmbeddingStore.writer(path, {column: vectors.shape[1]}) as store:
        store.append(ids, {column: vectors})
    return path


def synthetic_problem(seed=0, dim=DIM):
    """Clicks that only the vectors explain: label = [u_0 + v_0 > 0] with 10% noise.

    Validation and test users are unseen in training, and item ids are
    random, so the sparse features carry no signal. Returns real
    `RankingFeatures` (built from arrays, not from a split) and the user and
    item vector tables (row = index, as `RankingFeatures.vector_table` makes them).
    """
    rng = np.random.default_rng(seed)
    user_table = np.zeros((161, dim), "float32")
    user_table[1:] = rng.normal(size=(160, dim))
    item_table = np.zeros((NUM_ITEMS + 1, dim), "float32")
    item_table[1:] = rng.normal(size=(NUM_ITEMS, dim))
    features = RankingFeatures.__new__(RankingFeatures)
    features.inputs, features.labels, features._tier_inputs = {}, {}, {}
    features.item_genres = rng.integers(0, 4, (NUM_ITEMS + 1, 2)).astype("int32")
    features.genre_vocabulary = {f"g{i}": i for i in range(1, 4)}
    features.user_vocabulary = {str(user): user for user in range(1, 161)}
    features.user_field_sizes = [3]
    for name, size in SIZES.items():
        users = rng.choice(np.asarray(USERS[name]), size)
        items = rng.integers(1, NUM_ITEMS + 1, size)
        score = user_table[users, 0] + item_table[items, 0]
        features.inputs[name] = {
            "user": users.astype("int32"),
            "item": items.astype("int32"),
            "history_items": rng.integers(0, NUM_ITEMS + 1, (size, 8)).astype("int32"),
            "history_ratings": rng.integers(1, 6, (size, 8)).astype("int32"),
            "user_fields": rng.integers(1, 3, (size, 1)).astype("int32"),
        }
        features.labels[name] = ((score > 0) ^ (rng.random(size) < 0.1)).astype("float32")
    return features, user_table, item_table


def test_learns_from_the_vectors_in_a_child_process():
    features, user_table, item_table = synthetic_problem()
    config = DownstreamConfig(
        max_epochs=4, patience=2, batch_size=128, learning_rate=3e-3, seeds=(0,), **PLAIN
    )
    lines = []
    result = TFRSRanker(config, threads=1, log=lines.append).evaluate(
        features, "kar", user_table, item_table
    )
    (run,) = result["runs"]
    assert run["test_auc"] > 0.75, lines
    assert 0 < run["test_logloss"] < 0.69
    assert 1 <= run["epochs"] == len(run["validation_auc"]) <= 4
    assert run["best_epoch"] == int(np.argmax(run["validation_auc"])) + 1
    assert run["train_samples"] == 3000 and result["tier"] == "kar" and result["seconds"] > 0
    assert any(line.startswith("tfrs kar seed 0 epoch 1: ") for line in lines)
    # TensorFlow Recommenders and legacy Keras stay in the child.
    assert "tensorflow_recommenders" not in sys.modules and "tf_keras" not in sys.modules


@pytest.mark.parametrize("tier", ["kar", "full"])
def test_builds_the_keras_ranker_from_the_same_settings(tier):
    # One source of settings: tier fields, cross rank, experts, adaptor widths
    # and the per-seed subsample come from the DownstreamConfig and tier, so
    # the TFRS model has exactly the Keras DCNv2Ranker's trainable weights.
    from marc_keras.ranking.dcn_v2_ranker import DCNv2Ranker
    from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator

    features, user_table, item_table = synthetic_problem()
    config = DownstreamConfig(
        max_epochs=1,
        batch_size=512,
        seeds=(0, 1),
        train_samples=1000,
        cross_projection_dim=8 if tier == "kar" else None,
        num_experts=2,
        adaptor_user_dim=4,
    )
    ranker = DCNv2Ranker.from_features(
        features,
        TIERS[tier],
        user_table,
        item_table,
        num_experts=config.num_experts,
        cross_projection_dim=config.cross_projection_dim,
        **config.adaptor_setting().ranker_arguments(),
    )
    ranker(features.tier_inputs(TIERS[tier])["test"])
    expected = sum(int(np.prod(weight.shape)) for weight in ranker.trainable_weights)
    result = TFRSRanker(config, threads=1, log=lambda line: None).evaluate(
        features, tier, user_table, item_table
    )
    assert [run["trainable_parameters"] for run in result["runs"]] == [expected, expected]
    assert [run["seed"] for run in result["runs"]] == [0, 1]
    settings = result["settings"]
    assert settings["cross_projection_dim"] == config.cross_projection_dim
    assert settings["user_field_sizes"] == ([3] if tier == "full" else [])
    assert settings["adaptor"] == dataclasses.asdict(config.adaptor_setting())
    evaluator = DownstreamEvaluator(features, config)
    assert [run["train_samples"] for run in result["runs"]] == [1000, 1000]
    assert not np.array_equal(evaluator.train_rows(0), evaluator.train_rows(1))
    np.testing.assert_array_equal(
        evaluator.train_rows(1), training_rows(len(features.labels["train"]), 1000, 1)
    )


def test_a_store_of_the_wrong_width_names_the_file(tmp_path):
    path = write_store(tmp_path / "users.parquet", np.arange(1, 5), np.ones((4, DIM), "float32"))
    with pytest.raises(
        ValueError,
        match=r"users\.parquet' holds 8-d 'compressed' vectors, but the ranker was set up for 16-d",
    ):
        read_store_vectors(path, expected_dim=16)
    with pytest.raises(KeyError, match="has no vector column 'original'"):
        read_store_vectors(path, column="original")


def test_missing_ids_map_to_zeros_up_to_a_small_fraction(tmp_path):
    path = write_store(tmp_path / "users.parquet", np.arange(1, 201), np.ones((200, 4), "float32"))
    ids, vectors = read_store_vectors(path, expected_dim=4)
    assert ids.dtype.kind == "U" and ids[0] == "1" and vectors.shape == (200, 4)
    assert check_store_coverage(path, ids, ["1", 2, "300"], max_missing_fraction=0.5) == ["300"]
    with pytest.raises(ValueError, match=r"users\.parquet' has no vector for 3 of the 202 ids"):
        check_store_coverage(path, ids, [*range(1, 200), "x", "y", "z"])


def test_a_store_that_repeats_ids_is_refused(tmp_path):
    path = write_store(tmp_path / "users.parquet", ["a", "a"], np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match="holds some ids more than once"):
        read_store_vectors(path)


def test_a_failing_child_reports_its_stderr():
    features, user_table, item_table = synthetic_problem()
    features.user_field_sizes = [1]  # too small for field values 1..2: the embedding lookup fails
    ranker = TFRSRanker(DownstreamConfig(max_epochs=1, seeds=(0,)), log=lambda line: None)
    with pytest.raises(RuntimeError, match="The TFRS ranker process failed with exit code 1"):
        ranker.evaluate(features, "full", user_table, item_table)


def test_the_parent_side_imports_no_tensorflow():
    # Through the package, as the parent and the child process import it:
    # marc_keras.ranking's __init__ must stay free of Keras 3 and torch.
    code = (
        "import sys\n"
        "import marc_keras.ranking.tfrs_ranker\n"
        "print(sorted({'tensorflow', 'tf_keras', 'tensorflow_recommenders', 'keras', 'torch'}"
        " & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
