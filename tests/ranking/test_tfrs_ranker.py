import subprocess
import sys
import types

import numpy as np
import pytest

from marc_keras.ranking.tfrs_ranker import TFRSRanker, check_store_coverage, read_store_vectors
from marc_keras.export.embedding_store import EmbeddingStore

SIZES = {"train": 3000, "validation": 600, "test": 600}
USERS = {"train": range(1, 121), "validation": range(121, 141), "test": range(141, 161)}
NUM_ITEMS, DIM = 40, 8


def write_store(path, ids, vectors, column="compressed"):
    with EmbeddingStore.writer(path, {column: vectors.shape[1]}) as store:
        store.append(ids, {column: vectors})
    return path


def synthetic_problem(tmp_path, seed=0, dim=DIM):
    """Clicks that only the stored vectors explain: label = [u_0 + v_0 > 0] with 10% noise.

    Validation and test users are unseen in training, and item ids are
    random, so the sparse features carry no signal; stores use int ids
    (users) and string ids (items).
    """
    rng = np.random.default_rng(seed)
    user_vectors = rng.normal(size=(160, dim)).astype("float32")
    item_vectors = rng.normal(size=(NUM_ITEMS, dim)).astype("float32")
    features = types.SimpleNamespace(
        inputs={},
        labels={},
        item_genres=rng.integers(0, 4, (NUM_ITEMS + 1, 2)).astype("int32"),
        user_field_sizes=[3],
        user_vocabulary={str(user): user for user in range(1, 161)},
        item_vocabulary={f"m{item}": item for item in range(1, NUM_ITEMS + 1)},
    )
    for name, size in SIZES.items():
        users = rng.choice(np.asarray(USERS[name]), size)
        items = rng.integers(1, NUM_ITEMS + 1, size)
        score = user_vectors[users - 1, 0] + item_vectors[items - 1, 0]
        features.inputs[name] = {
            "user": users.astype("int32"),
            "item": items.astype("int32"),
            "history_items": rng.integers(0, NUM_ITEMS + 1, (size, 5)).astype("int32"),
            "history_ratings": rng.integers(1, 6, (size, 5)).astype("int32"),
            "user_fields": rng.integers(1, 3, (size, 1)).astype("int32"),
        }
        features.labels[name] = ((score > 0) ^ (rng.random(size) < 0.1)).astype("float32")
    user_store = write_store(tmp_path / "users.parquet", np.arange(1, 161), user_vectors)
    item_store = write_store(
        tmp_path / "items.parquet", [f"m{item}" for item in range(1, NUM_ITEMS + 1)], item_vectors
    )
    return features, user_store, item_store


def test_learns_from_the_stored_vectors_in_a_child_process(tmp_path):
    features, user_store, item_store = synthetic_problem(tmp_path)
    lines = []
    ranker = TFRSRanker(
        user_store,
        item_store,
        user_vector_dim=DIM,
        item_vector_dim=DIM,
        max_epochs=4,
        patience=2,
        batch_size=128,
        learning_rate=3e-3,
        log=lines.append,
    )
    result = ranker.evaluate(features, seeds=(0,), train_rows=np.arange(2500))
    (run,) = result["runs"]
    assert run["test_auc"] > 0.75, lines
    assert 0 < run["test_logloss"] < 0.69
    assert 1 <= len(run["validation_auc"]) <= 4
    assert run["best_epoch"] == int(np.argmax(run["validation_auc"])) + 1
    assert result["missing"] == {"user": 0, "item": 0} and result["seconds"] > 0
    assert any(line.startswith("tfrs seed 0 epoch 1: ") for line in lines)
    # TensorFlow Recommenders and legacy Keras stay in the child.
    assert "tensorflow_recommenders" not in sys.modules and "tf_keras" not in sys.modules


def test_a_store_of_the_wrong_width_names_the_file(tmp_path):
    _, user_store, item_store = synthetic_problem(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"users\.parquet' holds 8-d 'compressed' vectors, but the ranker was set up for 16-d",
    ):
        TFRSRanker(user_store, item_store, user_vector_dim=16)
    with pytest.raises(KeyError, match="has no vector column 'original'"):
        TFRSRanker(user_store, item_store, column="original")


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


def test_a_failing_child_reports_its_stderr(tmp_path):
    features, user_store, item_store = synthetic_problem(tmp_path)
    features.user_field_sizes = [1]  # too small for field values 1..2: the embedding lookup fails
    ranker = TFRSRanker(user_store, item_store, max_epochs=1, log=lambda line: None)
    with pytest.raises(RuntimeError, match="The TFRS ranker process failed with exit code 1"):
        ranker.evaluate(features, train_rows=np.arange(200))


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
