import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import keras
from marc_keras.marc_run import MARCRun, write_atomically
from marc_keras.run_config import RunConfig


@pytest.fixture
def tiny_config(tiny_preset, ml1m_dir):
    return RunConfig.from_file(
        None,
        [
            f'model.preset="{tiny_preset}"',
            f'data.data_dir="{ml1m_dir}"',
            "model.lora_rank=2",
            "model.max_length=24",
            "model.compressed_dim=8",
            "model.compression_hidden_units=[16]",
            "model.matching_hidden_units=[16]",
            "training.train_samples=64",
            "training.validation_samples=32",
            "training.test_samples=32",
            "training.batch_size=16",
        ],
    )


def test_fit_writes_a_complete_run_and_a_rerun_only_reports(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    metrics = MARCRun.open(run_dir, tiny_config).fit(log=lambda _: None, verbose=0)
    for name in ("config.json", "tokens.npz", "history.csv", "model.keras", "encoder.keras", "lora.lora.h5", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".partial-*"))
    assert metrics["test"]["pairs"] == 32 and 0.0 <= metrics["test"]["auc"] <= 1.0
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    encoder = keras.saving.load_model(run_dir / "encoder.keras")
    assert encoder.encode(["Female, age 25-34. Recently watched: nothing yet."])["compressed"].shape == (1, 8)
    model_mtime = (run_dir / "model.keras").stat().st_mtime
    again = MARCRun.open(run_dir, tiny_config).fit(log=lambda _: None, verbose=0)
    assert again == json.loads(json.dumps(metrics))
    assert (run_dir / "model.keras").stat().st_mtime == model_mtime


@pytest.mark.parametrize("objective", ["contrastive", "aoe", "cosine"])
def test_objectives_without_bce_report_their_own_loss(tiny_config, tmp_path, objective):
    config = tiny_config.replace(model=dataclasses.replace(tiny_config.model, objective=objective, hsic_weight=0.0))
    metrics = MARCRun.open(tmp_path / "run", config).fit(log=lambda _: None, verbose=0)
    assert sorted(metrics["test"]) == sorted(["auc", objective, "pairs"])
    assert np.isfinite(metrics["test"][objective])


def test_tokens_are_sampled_deterministically(tiny_config, tmp_path):
    for name in ("a", "b"):
        MARCRun.open(tmp_path / name, tiny_config).fit(log=lambda _: None, verbose=0)
    with np.load(tmp_path / "a" / "tokens.npz") as a, np.load(tmp_path / "b" / "tokens.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_a_directory_holding_another_run_is_refused(tiny_config, tmp_path):
    MARCRun.open(tmp_path, tiny_config)
    other = tiny_config.replace(training=tiny_config.training.__class__(epochs=3))
    with pytest.raises(ValueError, match="holds another run.*training.epochs"):
        MARCRun.open(tmp_path, other)
    stranger = tmp_path / "not-a-run"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a marc-keras run"):
        MARCRun.open(stranger, tiny_config)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def failing(path):
        Path(path).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
