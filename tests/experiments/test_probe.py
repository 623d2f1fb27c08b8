"""`marc-keras probe` through `marc_keras.experiments.probe.probe_runs`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from marc_keras.cli.main import main


def test_probe_command_explains_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main, ["probe", "--run-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "holds no config.json" in result.stderr
    result = runner.invoke(
        main,
        ["probe", "--run-dir", str(tmp_path), "--output-dir", str(tmp_path), "--layers", "1,x"],
    )
    assert result.exit_code == 2 and "--layers" in result.stderr
    result = runner.invoke(main, ["probe", "--output-dir", str(tmp_path / "out")])
    assert (
        result.exit_code == 1
        and "Nothing to probe" in result.stderr
        and "--config with --frozen" in result.stderr
    )


@pytest.mark.slow
def test_probe_command_on_a_tiny_run(tiny_preset, ml1m_dir, tmp_path):
    fit = [
        "fit",
        "--run-dir",
        str(tmp_path / "run"),
        "--data-dir",
        str(ml1m_dir),
        "--set",
        f'model.preset="{tiny_preset}"',
        "--set",
        "model.lora_rank=2",
        "--set",
        "model.max_length=24",
        "--set",
        "model.compressed_dim=8",
        "--set",
        "training.train_samples=32",
        "--set",
        "training.validation_samples=16",
        "--set",
        "training.test_samples=16",
        "--set",
        "training.batch_size=16",
    ]
    assert CliRunner().invoke(main, fit).exit_code == 0
    probe = [
        "probe",
        "--run-dir",
        str(tmp_path / "run"),
        "--label",
        "tiny",
        "--frozen",
        "--output-dir",
        str(tmp_path / "probe"),
        "--layers",
        "0,2",
        "--set",
        "evaluate.seeds=[0]",
        "--set",
        "evaluate.train_samples=2000",
        "--set",
        "evaluate.max_epochs=1",
        "--set",
        "training.threads=1",
    ]
    result = CliRunner().invoke(main, probe)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert [(row["method"], row["layer"]) for row in report["rows"]] == [
        ("frozen", 0),
        ("frozen", 2),
        ("tiny", 0),
        ("tiny", 2),
    ]
    assert [marker["name"] for marker in report["markers"]] == ["dcnv2", "tiny/marc-c"]
    assert all("relaimpr" in row for row in report["rows"])
    assert (tmp_path / "probe" / "mra.png").stat().st_size > 0
    assert "| tiny/marc-c | 2 |" in result.stdout
    with np.load(tmp_path / "probe" / "layers-tiny.npz") as stored:
        assert stored["user/compressed"].shape[1] == 8

    first_aucs = {(row["method"], row["layer"]): row["aucs"] for row in report["rows"]}
    assert (tmp_path / "probe" / "probe-progress.json").is_file()

    again = CliRunner().invoke(main, [*probe[:8], "--layers", "2", "--no-markers", *probe[10:]])
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "probe" / "probe.json").read_text())["rows"]
    assert all(row["aucs"] == first_aucs[(row["method"], row["layer"])] for row in rerun)
    assert "reusing the layer vectors of 'frozen'" in again.stderr
    assert "reusing the layer vectors of 'tiny'" in again.stderr
    assert [
        (row["method"], row["layer"])
        for row in json.loads((tmp_path / "probe" / "probe.json").read_text())["rows"]
    ] == [("frozen", 2), ("tiny", 2)]
    result = CliRunner().invoke(main, [*probe[:8], "--layers", "7", *probe[10:]])
    assert result.exit_code == 1 and "Layers [7] are not in 0..2" in result.stderr

    frozen_only = [
        "probe",
        "--config",
        str(tmp_path / "run" / "config.json"),
        "--frozen",
        *probe[6:8],
        "--layers",
        "2",
        "--no-markers",
        *probe[10:],
    ]
    result = CliRunner().invoke(main, frozen_only)
    assert result.exit_code == 0, result.output
    assert "reusing the layer vectors of 'frozen'" in result.stderr
    assert [
        (row["method"], row["layer"])
        for row in json.loads((tmp_path / "probe" / "probe.json").read_text())["rows"]
    ] == [("frozen", 2)]
