import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime
import pandas as pd
import pytest

import marc_keras
from marc_keras.export.bundle_manifest import file_sha256
from marc_keras.export.embedding_store import load_embedding_table
from marc_keras.export.onnx_encoder import OnnxEncoder

TEXTS = [
    "the action movie",
    "user likes the comedy film and the drama film and the action movie",
    "a film",
    "",
    "the user likes drama",
    "movie",
    "the the the comedy comedy",
]


def _copy(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def test_vectors_come_back_in_input_order_whatever_the_batching(tiny_bundle):
    bundle, encoder = tiny_bundle
    sorted_vectors = OnnxEncoder(bundle, provider="cpu", batch_size=3).encode(TEXTS)
    unsorted_vectors = OnnxEncoder(
        bundle, provider="cpu", batch_size=3, sort_by_length=False
    ).encode(TEXTS)
    one_by_one = [
        OnnxEncoder(bundle, provider="cpu").encode([text])["compressed"][0] for text in TEXTS
    ]
    np.testing.assert_allclose(sorted_vectors["compressed"], np.stack(one_by_one), atol=1e-5)
    np.testing.assert_allclose(sorted_vectors["original"], unsorted_vectors["original"], atol=1e-5)
    keras_vectors = encoder.encode(TEXTS)
    np.testing.assert_allclose(sorted_vectors["compressed"], keras_vectors["compressed"], atol=1e-4)


def test_long_texts_are_truncated_and_counted_bad_texts_are_named(tiny_bundle):
    bundle, _ = tiny_bundle
    encoder = OnnxEncoder(bundle, provider="cpu")
    vectors = encoder.encode(["the movie " * 50, "a film"])
    assert encoder.last_truncated == 1 and vectors["compressed"].shape == (2, 8)
    with pytest.raises(TypeError, match="Text 1 is NoneType"):
        encoder.encode(["a film", None])
    with pytest.raises(TypeError, match="Text 0 is int"):
        encoder.encode([5])
    assert encoder.encode([])["original"].shape == (0, 16)


def test_an_altered_or_missing_file_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle[0], tmp_path)
    with open(bundle / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match="model.onnx' does not match its checksum"):
        OnnxEncoder(bundle)
    shutil.copy(tiny_bundle[0] / "model.onnx", bundle / "model.onnx")
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(
        FileNotFoundError, match="tokenizer.json' listed in manifest.json is missing"
    ):
        OnnxEncoder(bundle)
    (bundle / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="is not a marc-keras-onnx-bundle manifest"):
        OnnxEncoder(bundle)
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        OnnxEncoder(tmp_path)


def test_a_tokenizer_from_another_model_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle[0], tmp_path)
    other = marc_keras.TextTokenizer.from_vocabulary(
        ["many", "more", "words", "than", "before"] * 1 + [f"w{i}" for i in range(40)]
    )
    (bundle / "tokenizer.json").write_text(other.to_json())
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["tokenizer.json"] = file_sha256(bundle / "tokenizer.json")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="does not belong to this model"):
        OnnxEncoder(bundle)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="CUDA is available here",
)
def test_asking_for_cuda_without_it_is_an_error(tiny_bundle):
    with pytest.raises(RuntimeError, match="CUDA provider was asked for.*marc-keras\\[gpu\\]"):
        OnnxEncoder(tiny_bundle[0], provider="cuda")
    assert OnnxEncoder(tiny_bundle[0], provider="auto").provider == "cpu"


def test_encode_file_streams_parquet_into_a_store(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    encoder = OnnxEncoder(bundle, provider="cpu", batch_size=2)
    ids = np.arange(100, 100 + len(TEXTS))
    pd.DataFrame({"item_id": ids, "text": TEXTS}).to_parquet(
        tmp_path / "items.parquet", row_group_size=3
    )
    stats = encoder.encode_file(
        tmp_path / "items.parquet",
        tmp_path / "store.parquet",
        id_column="item_id",
        chunk_size=2,
        write_npy=True,
    )
    assert stats["rows"] == len(TEXTS) and stats["truncated"] == 1  # TEXTS[1] is over 12 tokens
    stored_ids, vectors, metadata = load_embedding_table(tmp_path / "store.parquet", "original")
    assert stored_ids.tolist() == ids.tolist() and stored_ids.dtype == np.int64
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS)["original"], atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "store.original.npy"), vectors)
    assert metadata["manifest"]["outputs"] == {"compressed": 8, "original": 16}


def test_encode_file_names_the_bad_row_and_writes_nothing(tiny_bundle, tmp_path):
    encoder = OnnxEncoder(tiny_bundle[0], provider="cpu")
    pd.DataFrame({"id": ["a", "b", "c"], "text": ["a film", None, "movie"]}).to_parquet(
        tmp_path / "in.parquet"
    )
    with pytest.raises(ValueError, match="row 1 \\(id 'b'\\) has a null in column 'text'"):
        encoder.encode_file(tmp_path / "in.parquet", tmp_path / "out.parquet")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.parquet"]
    with pytest.raises(
        ValueError, match="has no column\\(s\\) \\['body'\\]; its columns are \\['id', 'text'\\]"
    ):
        encoder.encode_file(tmp_path / "in.parquet", tmp_path / "out.parquet", text_column="body")
    (tmp_path / "in.json").write_text("{}")
    with pytest.raises(ValueError, match="must be a .parquet or .csv table"):
        encoder.encode_file(tmp_path / "in.json", tmp_path / "out.parquet")


def test_the_runtime_imports_neither_keras_torch_tensorflow_nor_ray():
    # The sharded encoder imports Ray only inside its ray engine.
    code = (
        "import sys; import marc_keras.export.onnx_encoder, marc_keras.export.sharded_encoder; "
        "print(sorted(m for m in ('keras', 'torch', 'tensorflow', 'ray') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


@pytest.mark.parametrize("chunk_size", [100, 2], ids=["one-chunk", "across-chunks"])
def test_duplicate_ids_are_refused_before_anything_is_written(tiny_bundle, tmp_path, chunk_size):
    encoder = OnnxEncoder(tiny_bundle[0], provider="cpu")
    ids = ["a", "b", "c", "b", "d", "a", "e", "b"]
    pd.DataFrame({"id": ids, "text": ["a film"] * len(ids)}).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(ValueError) as error:
        encoder.encode_file(
            tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_size=chunk_size
        )
    message = str(error.value)
    assert (
        "in.parquet' has duplicate ids in column 'id': 'a' (rows 0, 5); 'b' (rows 1, 3, 7)."
        in message
    )
    assert "deduplicate the input" in message
    (tmp_path / "in.csv").write_text("item,text\n7,a film\n8,movie\n9,film\n8,the movie\n")
    with pytest.raises(
        ValueError, match=r"in\.csv' has duplicate ids in column 'item': 8 \(rows 1, 3\)"
    ):
        encoder.encode_file(
            tmp_path / "in.csv", tmp_path / "out.parquet", id_column="item", chunk_size=chunk_size
        )
    (tmp_path / "in.csv").write_text("item,text\n7,a film\n,movie\n")
    with pytest.raises(ValueError, match=r"in\.csv' row 1 has no id \(a null in column 'item'\)"):
        encoder.encode_file(
            tmp_path / "in.csv", tmp_path / "out.parquet", id_column="item", chunk_size=chunk_size
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.csv", "in.parquet"]


def _interrupt_on_chunk(encoder, monkeypatch, chunk):
    """Makes `encoder.encode` raise KeyboardInterrupt on its `chunk`-th call (from 0)."""
    encode, calls = encoder.encode, []

    def interrupted(texts, on_batch=None):
        calls.append(len(texts))
        if len(calls) > chunk:
            raise KeyboardInterrupt
        return encode(texts, on_batch)

    monkeypatch.setattr(encoder, "encode", interrupted)


def test_an_interrupted_encode_resumes_and_a_changed_input_starts_over(
    tiny_bundle, tmp_path, monkeypatch
):
    encoder = OnnxEncoder(tiny_bundle[0], provider="cpu", batch_size=2)
    source, output, staging = (
        tmp_path / "items.parquet",
        tmp_path / "store.parquet",
        tmp_path / ".partial-store.parquet",
    )
    pd.DataFrame({"id": np.arange(len(TEXTS)), "text": TEXTS}).to_parquet(source)
    _interrupt_on_chunk(encoder, monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        encoder.encode_file(source, output, chunk_size=2, write_npy=True)
    assert sorted(path.name for path in staging.iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "progress.json",
    ]
    assert not output.exists()
    monkeypatch.undo()
    stats = encoder.encode_file(source, output, chunk_size=2, write_npy=True)
    assert (
        stats["rows"],
        stats["resumed_rows"],
        stats["truncated"],
        stats["discarded_partial"],
    ) == (7, 4, 1, None)
    ids, vectors, _ = load_embedding_table(output, "original")
    assert ids.tolist() == list(range(len(TEXTS)))
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS)["original"], atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "store.original.npy"), vectors)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "items.parquet",
        "store.compressed.npy",
        "store.original.npy",
        "store.parquet",
    ]

    _interrupt_on_chunk(encoder, monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        encoder.encode_file(source, output, chunk_size=2)
    monkeypatch.undo()
    changed = list(reversed(TEXTS))
    pd.DataFrame({"id": np.arange(len(TEXTS)), "text": changed}).to_parquet(source)
    stats = encoder.encode_file(source, output, chunk_size=2)
    assert stats["resumed_rows"] == 0
    assert (
        stats["discarded_partial"]
        == f"Discarded the unfinished encode in '{staging}': it was made with a different input."
    )
    np.testing.assert_allclose(
        load_embedding_table(output, "original")[1], encoder.encode(changed)["original"], atol=1e-6
    )
    assert not staging.exists()


def test_progress_off_a_terminal_is_plain_lines(tiny_bundle, tmp_path, capsys):
    encoder = OnnxEncoder(tiny_bundle[0], provider="cpu", batch_size=2)
    pd.DataFrame({"id": np.arange(len(TEXTS)), "text": TEXTS}).to_parquet(
        tmp_path / "items.parquet"
    )
    encoder.encode_file(tmp_path / "items.parquet", tmp_path / "store.parquet", verbose=True)
    captured = capsys.readouterr()
    assert "\x1b[" not in captured.err and captured.out == ""
    assert captured.err.splitlines()[-1] == "items.parquet: encoded 7/7 texts (100%)"
