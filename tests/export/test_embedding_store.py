import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from marc_keras.export.embedding_store import EmbeddingStore, load_embedding_table

MANIFEST = {"bundle": "marc-c", "backbone": "tiny-bert", "opset": 18}


def vectors(rows, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "compressed": rng.normal(size=(rows, 4)).astype("float32"),
        "original": rng.normal(size=(rows, 6)).astype("float32"),
    }


@pytest.mark.parametrize(
    "ids, id_type", [(["u1", "u2", "u3", "u4", "u5"], "string"), (np.arange(10, 15), "int64")]
)
def test_round_trip_in_chunks_with_npy_side_files(tmp_path, ids, id_type):
    path = tmp_path / "users.parquet"
    written = vectors(5)
    with EmbeddingStore.writer(
        path, {"compressed": 4, "original": 6}, MANIFEST, id_type=id_type, write_npy=True
    ) as store:
        store.append(ids[:2], {name: array[:2] for name, array in written.items()})
        store.append(ids[2:], {name: array[2:] for name, array in written.items()})
    assert EmbeddingStore(path).num_rows == 5
    for column in ("compressed", "original"):
        read_ids, read_vectors, metadata = load_embedding_table(path, column)
        assert read_ids.tolist() == list(ids) and read_vectors.dtype == np.float32
        np.testing.assert_array_equal(read_vectors, written[column])
        np.testing.assert_array_equal(np.load(tmp_path / f"users.{column}.npy"), written[column])
    assert metadata == {"dims": {"compressed": 4, "original": 6}, "manifest": MANIFEST}
    _, default_vectors, _ = load_embedding_table(path)
    np.testing.assert_array_equal(default_vectors, written["compressed"])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [
        "users.compressed.npy",
        "users.original.npy",
        "users.parquet",
    ]


def test_an_interrupted_writer_leaves_no_store(tmp_path):
    path = tmp_path / "items.parquet"
    with (
        pytest.raises(RuntimeError, match="encoder crashed"),
        EmbeddingStore.writer(path, {"compressed": 4}, write_npy=True) as store,
    ):
        store.append(["a"], {"compressed": np.ones((1, 4))})
        raise RuntimeError("encoder crashed")
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_shape_or_missing_column_is_refused(tmp_path):
    with EmbeddingStore.writer(
        tmp_path / "items.parquet", {"compressed": 4, "original": 6}
    ) as store:
        with pytest.raises(ValueError, match=r"missing vector columns \['original'\]"):
            store.append(["a"], {"compressed": np.ones((1, 4))})
        with pytest.raises(
            ValueError, match=r"Vectors 'original' have shape \(1, 5\); the store expects \(1, 6\)"
        ):
            store.append(["a"], {"compressed": np.ones((1, 4)), "original": np.ones((1, 5))})
        store.append(["a"], {"compressed": np.ones((1, 4)), "original": np.ones((1, 6))})


def test_an_unknown_column_lists_the_columns(tmp_path):
    path = tmp_path / "items.parquet"
    with EmbeddingStore.writer(path, {"compressed": 4, "original": 6}) as store:
        store.append(["a"], {"compressed": np.ones((1, 4)), "original": np.ones((1, 6))})
    with pytest.raises(
        KeyError,
        match=r"items\.parquet' has no vector column 'middle'; it has \['compressed', 'original'\]",
    ):
        load_embedding_table(path, "middle")


def test_files_that_are_not_stores_give_clear_errors(tmp_path):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"], "x": [1.0]}), plain)
    with pytest.raises(
        ValueError,
        match=(
            r"plain\.parquet' has no 'marc_keras' schema metadata; "
            r"it was not written by marc-keras"
        ),
    ):
        load_embedding_table(plain)
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet")
    with pytest.raises(
        ValueError, match=r"notes\.parquet' is not a readable parquet embedding store"
    ):
        load_embedding_table(text)
    with pytest.raises(FileNotFoundError, match="marc-keras encode"):
        load_embedding_table(tmp_path / "none.parquet")


def test_a_staged_store_takes_back_parts_only_for_the_same_key_and_ids(tmp_path):
    path, staging = tmp_path / "items.parquet", tmp_path / ".partial-items.parquet"
    dims, key, written = (
        {"compressed": 4, "original": 6},
        {"input": "items.csv", "chunk_size": 2},
        vectors(5),
    )
    rows = {name: array[:2] for name, array in written.items()}
    store = EmbeddingStore.staged(path, dims, MANIFEST, "string", key)
    store.write(["u1", "u2"], rows, {"truncated": 1})
    store.write(["u3", "u4"], {name: array[2:4] for name, array in written.items()})
    # A killed process leaves its parts; a new writer with the same key takes them back.
    store = EmbeddingStore.staged(path, dims, MANIFEST, "string", key)
    assert store.discarded is None
    assert store.resume(["u1", "u2"]) == {"truncated": 1}
    assert store.resume(["u3", "u9"]) is None  # other ids: the part is written again
    store.write(["u3", "u4"], {name: array[2:4] for name, array in written.items()})
    store.write(["u5"], {name: array[4:] for name, array in written.items()})
    store.finish(write_npy=True)
    for column in dims:
        ids, read, metadata = load_embedding_table(path, column)
        assert ids.tolist() == ["u1", "u2", "u3", "u4", "u5"] and metadata["manifest"] == MANIFEST
        np.testing.assert_array_equal(read, written[column])
        np.testing.assert_array_equal(np.load(tmp_path / f"items.{column}.npy"), written[column])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [
        "items.compressed.npy",
        "items.original.npy",
        "items.parquet",
    ]

    EmbeddingStore.staged(path, dims, MANIFEST, "string", key).write(["u1", "u2"], rows)
    store = EmbeddingStore.staged(path, dims, MANIFEST, "string", {**key, "chunk_size": 3})
    assert store.discarded == (
        f"Discarded the unfinished encode in '{staging}': it was made with a different chunk_size."
    )
    assert store.resume(["u1", "u2"]) is None
    (staging / "progress.json").unlink()
    store = EmbeddingStore.staged(path, dims, MANIFEST, "string", key)
    assert (
        store.discarded
        == f"Discarded the unfinished encode in '{staging}': it has no readable progress.json."
    )
