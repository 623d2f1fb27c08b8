import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
from click.testing import CliRunner

from marc_keras.cli.main import main
from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun
from marc_keras.export.embedding_store import load_embedding_table
from marc_keras.export.onnx_encoder import OnnxEncoder


@pytest.fixture(scope="module")
def tiny_run(tiny_preset, ml1m_dir, tmp_path_factory):
    config = RunConfig.from_file(
        None,
        [
            f'model.preset="{tiny_preset}"',
            f'data.data_dir="{ml1m_dir}"',
            "model.lora_rank=2",
            "model.max_length=24",
            "model.compressed_dim=8",
            "training.train_samples=32",
            "training.validation_samples=16",
            "training.test_samples=16",
            "training.batch_size=16",
        ],
    )
    run = MARCRun.open(tmp_path_factory.mktemp("runs") / "run", config)
    run.fit(log=lambda _: None, verbose=0)
    return run.run_dir


def test_export_then_encode_a_csv_into_a_store(tiny_run, tmp_path):
    bundle = tmp_path / "bundle"
    result = CliRunner().invoke(
        main, ["export", "--run-dir", str(tiny_run), "--bundle-dir", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (
        report["precision"] == "fp32"
        and max(report["verification"]["max_abs_error"].values()) <= 1e-4
    )
    # The bundle moves between machines: its manifest names no path of this one.
    manifest_text = (bundle / "manifest.json").read_text()
    assert str(tmp_path) not in manifest_text and str(Path.cwd()) not in manifest_text
    assert json.loads(manifest_text)["source"]["run"] == tiny_run.name
    texts = ["the comedy movie", "", "user likes the drama film " * 20, "action"]
    pd.DataFrame({"movie": ["m1", "m2", "m3", "m4"], "blurb": texts}).to_csv(
        tmp_path / "items.csv", index=False
    )
    args = [
        "encode",
        "--bundle-dir",
        str(bundle),
        "--input",
        str(tmp_path / "items.csv"),
        "--output",
        str(tmp_path / "items.parquet"),
        "--id-column",
        "movie",
        "--text-column",
        "blurb",
        "--outputs",
        "compressed",
        "--provider",
        "cpu",
        "--chunk-size",
        "3",
        "--npy",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout[result.stdout.index("{") :])
    assert stats["rows"] == 4 and stats["truncated"] == 1 and stats["provider"] == "cpu"
    ids, vectors, metadata = load_embedding_table(tmp_path / "items.parquet")
    assert ids.tolist() == ["m1", "m2", "m3", "m4"] and vectors.shape == (4, 8)
    assert metadata["manifest"]["precision"] == "fp32" and metadata["dims"] == {"compressed": 8}
    np.testing.assert_array_equal(np.load(tmp_path / "items.compressed.npy"), vectors)


def test_texts_then_a_sharded_encode_feed_rank_from_the_shell(tiny_run, tmp_path):
    """The production walk-through: export -> texts -> encode --engine local -> rank."""
    bundle, texts = tmp_path / "bundle", tmp_path / "texts"
    invoke = CliRunner().invoke
    assert (
        invoke(main, ["export", "--run-dir", str(tiny_run), "--bundle-dir", str(bundle)]).exit_code
        == 0
    )
    result = invoke(
        main,
        [
            "texts",
            "--run-dir",
            str(tiny_run),
            "--output-dir",
            str(texts),
            "--row-group-rows",
            "1000",
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    stores = {}
    for name in ("users", "items"):
        table = pd.read_parquet(texts / f"{name}.parquet")
        assert len(table) == written[name]["rows"] and table["id"].is_unique
        stores[name] = tmp_path / f"{name}-store"
        args = ["encode", "--bundle-dir", str(bundle), "--input", str(texts / f"{name}.parquet")]
        args += ["--output", str(stores[name]), "--engine", "local", "--shard-rows", "1500"]
        result = invoke(main, args + ["--threads", "1", "--provider", "cpu"])
        assert result.exit_code == 0, result.output
        stats = json.loads(result.stdout[result.stdout.index("{") :])
        assert stats["rows"] == len(table) and stats["shards"] == -(-len(table) // 1000)
        ids, vectors, _ = load_embedding_table(stores[name], "original")
        assert ids.tolist() == table["id"].tolist()
        sample = OnnxEncoder(bundle, provider="cpu").encode(table["text"].tolist()[:5])
        np.testing.assert_allclose(vectors[:5], sample["original"], atol=1e-5)
    result = invoke(
        main,
        [
            "rank", "--run-dir", str(tiny_run), "--user-store", str(stores["users"]),
            "--item-store", str(stores["items"]), "--seeds", "0",
            "--set", "evaluate.train_samples=2000", "--set", "evaluate.max_epochs=1",
            "--set", 'evaluate.tiers=["kar"]',
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tiny_run / "rank-keras.json").read_text())
    assert report["missing"] == {"user": 0, "item": 0}


def test_export_and_encode_errors_are_one_line(tiny_run, tmp_path):
    result = CliRunner().invoke(
        main, ["export", "--run-dir", str(tmp_path), "--bundle-dir", str(tmp_path / "b")]
    )
    assert result.exit_code == 1 and "encoder.keras' does not exist" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    bundle = tmp_path / "bundle"
    assert (
        CliRunner()
        .invoke(main, ["export", "--run-dir", str(tiny_run), "--bundle-dir", str(bundle)])
        .exit_code
        == 0
    )
    (tmp_path / "texts.csv").write_text("id,text\n1,hello\n")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        args = [
            "encode",
            "--bundle-dir",
            str(bundle),
            "--input",
            str(tmp_path / "texts.csv"),
            "--output",
            str(tmp_path / "o.parquet"),
            "--provider",
            "cuda",
        ]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "CUDA provider was asked for" in result.stderr
    args = [
        "encode",
        "--bundle-dir",
        str(bundle),
        "--input",
        str(tmp_path / "texts.csv"),
        "--output",
        str(tmp_path / "o.parquet"),
        "--text-column",
        "blurb",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "has no column(s) ['blurb']" in result.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_a_killed_encode_resumes_without_encoding_its_finished_chunks_again(tiny_bundle, tmp_path):
    # 8,000 short texts in 125 chunks of 64 take the tiny bundle about 1.5 s on
    # one thread, so a kill after 10 chunks lands long before the end.
    bundle, _ = tiny_bundle
    rng = np.random.default_rng(0)
    words = ["the", "a", "movie", "user", "likes", "film", "action", "comedy", "drama", "stars"]
    count, chunk_size = 8000, 64
    ids = [f"item{row}" for row in range(count)]
    texts = [" ".join(rng.choice(words, rng.integers(1, 10))) for _ in range(count)]
    pd.DataFrame({"id": ids, "text": texts}).to_csv(tmp_path / "items.csv", index=False)
    output, staging = tmp_path / "items.parquet", tmp_path / ".partial-items.parquet"
    command = [
        str(Path(sys.executable).with_name("marc-keras")),
        "encode",
        "--bundle-dir",
        str(bundle),
        "--input",
        str(tmp_path / "items.csv"),
        "--output",
        str(output),
        "--provider",
        "cpu",
        "--threads",
        "1",
        "--batch-size",
        "8",
        "--chunk-size",
        str(chunk_size),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(staging.glob("part-*.parquet"))) < 10:
        assert child.poll() is None, f"encode ended before it was killed: {child.communicate()}"
        assert time.monotonic() < deadline, "encode wrote no 10 parts within 120 s"
        time.sleep(0.005)
    child.kill()
    child.communicate()
    assert child.returncode == -signal.SIGKILL and not output.exists()
    finished_parts = len(list(staging.glob("part-*.parquet")))

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    stats = json.loads(rerun.stdout)
    assert stats["rows"] == count and stats["resumed_rows"] >= finished_parts * chunk_size > 0
    assert "resumed from an earlier run" in rerun.stderr and "\x1b[" not in rerun.stderr
    clean = OnnxEncoder(bundle, provider="cpu", threads=1, batch_size=8)
    clean.encode_file(tmp_path / "items.csv", tmp_path / "clean.parquet", chunk_size=chunk_size)
    for column in ("compressed", "original"):
        stored_ids, vectors, _ = load_embedding_table(output, column)
        assert stored_ids.tolist() == ids
        np.testing.assert_allclose(
            vectors, load_embedding_table(tmp_path / "clean.parquet", column)[1], atol=1e-5
        )
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [
        "clean.parquet",
        "items.csv",
        "items.parquet",
    ]
