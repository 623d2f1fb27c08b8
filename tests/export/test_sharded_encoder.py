import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from marc_keras.export.embedding_store import load_embedding_table
from marc_keras.export.encode_plan import EncodePlan, _row_ranges
from marc_keras.export.onnx_encoder import OnnxEncoder
from marc_keras.export.sharded_encoder import ShardedEncoder

WORDS = ("the", "a", "movie", "user", "likes", "film", "action", "comedy", "drama", "stars")


def texts_table(count, start=0, seed=0):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(0, 15))) for _ in range(count)]
    return pa.table({"id": np.arange(start, start + count), "text": texts})


def write_inputs(directory, row_group_size=7):
    """Two parquet files (37 rows in groups of 7, 20 rows) and a CSV of 9 rows."""
    directory.mkdir()
    pq.write_table(texts_table(37), directory / "a.parquet", row_group_size=row_group_size)
    pq.write_table(texts_table(20, 37, 1), directory / "b.parquet", row_group_size=20)
    texts_table(9, 57, 2).to_pandas().to_csv(directory / "c.csv", index=False)
    return directory


def all_texts(directory):
    tables = [pq.read_table(directory / name) for name in ("a.parquet", "b.parquet")]
    frame = pa.concat_tables(tables).to_pandas()
    csv = pa.csv.read_csv(directory / "c.csv").to_pandas()
    return list(frame["id"]) + list(csv["id"]), list(frame["text"]) + list(csv["text"].fillna(""))


def quiet_job(bundle, output, **kwargs):
    return ShardedEncoder(bundle, output, log=lambda line: None, **kwargs)


def test_row_ranges_follow_row_groups_and_cut_only_oversized_ones():
    assert _row_ranges([7, 7, 7, 7, 7, 2], 15) == [(0, 14), (14, 28), (28, 37)]
    assert _row_ranges([40], 15) == [(0, 15), (15, 30), (30, 40)]
    assert _row_ranges([3, 40, 3], 15) == [(0, 3), (3, 18), (18, 33), (33, 46)]


def test_plan_names_shards_stably_and_a_changed_file_gets_new_ids(tmp_path):
    inputs = write_inputs(tmp_path / "in")
    plan = EncodePlan.build([str(inputs)], "id", "text", {"compressed": 8}, "sha", 15)
    again = EncodePlan.build([str(inputs)], "id", "text", {"compressed": 8}, "sha", 15)
    assert [s["id"] for s in plan.shards] == [s["id"] for s in again.shards]
    assert [(s["row_start"], s["row_end"]) for s in plan.shards] == [
        (0, 14), (14, 28), (28, 37), (0, 15), (15, 20), (0, None)
    ]  # fmt: skip
    assert plan.rows is None and plan.shards[-1]["format"] == "csv"
    pq.write_table(texts_table(38), inputs / "a.parquet", row_group_size=7)
    changed = EncodePlan.build([str(inputs)], "id", "text", {"compressed": 8}, "sha", 15)
    assert changed.shards[0]["id"] != plan.shards[0]["id"]
    assert changed.shards[3]["id"] == plan.shards[3]["id"]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        EncodePlan.build([str(tmp_path / "nowhere")], "id", "text", {}, "sha", 10)
    pq.write_table(pa.table({"key": [1], "text": ["a"]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"no column\(s\) \['id'\].*--id-column"):
        EncodePlan.build([str(tmp_path / "t.parquet")], "id", "text", {}, "sha", 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .parquet or .csv"):
        EncodePlan.build([str(tmp_path / "empty")], "id", "text", {}, "sha", 10)


def test_local_engine_writes_one_row_per_id_equal_to_the_plain_encoder(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    inputs = write_inputs(tmp_path / "in")
    output = tmp_path / "store"
    stats = quiet_job(bundle, output, shard_rows=15).run([str(inputs)], threads=1)
    assert (stats["rows"], stats["shards"], stats["encoded_shards"]) == (66, 6, 6)
    ids, vectors, metadata = load_embedding_table(output, "original")
    expected_ids, texts = all_texts(inputs)
    assert ids.tolist() == expected_ids and len(set(ids.tolist())) == 66
    expected = OnnxEncoder(bundle, provider="cpu").encode(texts)["original"]
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert metadata["dims"] == {"compressed": 8, "original": 16}
    names = sorted(path.name for path in output.iterdir())
    assert names == sorted(
        ["_SUCCESS", "_done", "_plan.json", "_store.json"]
        + [
            f"part-{shard}.parquet"
            for shard in json.loads((output / "_store.json").read_text())["shard_rows"]
        ]
    )


def test_a_deleted_part_and_marker_re_encode_exactly_that_shard(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    inputs = write_inputs(tmp_path / "in")
    output = tmp_path / "store"
    quiet_job(bundle, output, shard_rows=15).run([str(inputs)], threads=1)
    _, before, _ = load_embedding_table(output)
    shard = sorted((output / "_done").iterdir())[2].stem
    (output / f"part-{shard}.parquet").unlink()
    (output / "_done" / f"{shard}.json").unlink()
    (output / "_tmp.part-stray.parquet.0").write_bytes(b"half a file")
    with pytest.raises(ValueError, match=r"lacks 1 of its parts .*run the same"):
        load_embedding_table(output)
    stats = quiet_job(bundle, output, shard_rows=15).run([str(inputs)], threads=1)
    assert (stats["encoded_shards"], stats["resumed_shards"], stats["rows"]) == (1, 5, 66)
    _, after, _ = load_embedding_table(output)
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert not list(output.glob("_tmp.*"))
    unchanged = quiet_job(bundle, output, shard_rows=15).run([str(inputs)], threads=1)
    assert unchanged["encoded_shards"] == 0


def test_another_bundle_or_plan_is_refused_without_overwrite(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    inputs = write_inputs(tmp_path / "in")
    output = tmp_path / "store"
    quiet_job(bundle, output, shard_rows=15).run([str(inputs)], threads=1)
    other = tmp_path / "other-bundle"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["source"] = {"test": "another export"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="different bundle_sha256.*--overwrite"):
        quiet_job(other, output, shard_rows=15).run([str(inputs)])
    with pytest.raises(ValueError, match=r"different shards \(input files or shard_rows\)"):
        quiet_job(bundle, output, shard_rows=10).run([str(inputs)])
    stats = quiet_job(other, output, shard_rows=15, overwrite=True).run([str(inputs)], threads=1)
    assert stats["encoded_shards"] == 6
    assert load_embedding_table(output)[2]["manifest"]["source"] == {"test": "another export"}


def test_duplicate_ids_and_null_texts_fail_without_success(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(texts_table(5), inputs / "a.parquet")
    pq.write_table(texts_table(5, 3), inputs / "b.parquet")
    with pytest.raises(ValueError, match=r"repeat 2 id\(s\) in column 'id' \(e.g. 3, 4\)"):
        quiet_job(bundle, tmp_path / "dup").run([str(inputs)], threads=1)
    assert not (tmp_path / "dup" / "_SUCCESS").exists()
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", None, "b"]}), tmp_path / "n.parquet")
    with pytest.raises(ValueError, match=r"n.parquet' row 1 has a null in column 'text'"):
        quiet_job(bundle, tmp_path / "null").run([str(tmp_path / "n.parquet")], threads=1)


def test_a_foreign_non_empty_output_directory_is_refused(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    pq.write_table(texts_table(3), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="not empty and was not written by a sharded encode"):
        quiet_job(bundle, tmp_path / "out").run([str(tmp_path / "a.parquet")])
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
