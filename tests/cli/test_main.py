import json

import pytest

from click.testing import CliRunner

from marc_keras.cli.main import main


def test_help_explains_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "fit" in result.output and "data" in result.output
    fit_help = CliRunner().invoke(main, ["fit", "--help"])
    assert "--run-dir" in fit_help.output and "resumes" in fit_help.output


def test_fit_on_a_tiny_run(tiny_preset, ml1m_dir, tmp_path):
    args = [
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
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (
        set(metrics)
        == {"validation", "test", "timings", "resumed_from_step", "train_pairs", "gradient_shares"}
        and metrics["resumed_from_step"] == 0
        and metrics["train_pairs"] == 32
    )
    assert result.stdout.rstrip().endswith("}") and '"auc"' in result.stdout
    assert (tmp_path / "run" / "encoder.keras").is_file()
    assert 0 < metrics["gradient_shares"]["gradient_share_hsic"]["compression"] < 1
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"gradient_share_hsic_compression", "gradient_share_hsic_lora"} <= set(history)

    small = [
        "--set",
        "evaluate.seeds=[0]",
        "--set",
        "evaluate.train_samples=2000",
        "--set",
        "evaluate.max_epochs=1",
    ]
    result = CliRunner().invoke(
        main,
        ["evaluate", "--run-dir", str(tmp_path / "run"), "--tier", "full", "--tier", "kar", *small],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "evaluate.json").read_text())
    names = [
        "dcnv2",
        "lr-2",
        "random",
        "profile",
        "frozen",
        "frozen-user-only",
        "frozen-item-only",
        "pca-8",
        "marc-o",
        "marc-c",
    ]
    assert [(row["tier"], row["name"]) for row in report["rows"]] == [
        (tier, name) for tier in ("full", "kar") for name in names
    ]
    by_row = {(row["tier"], row["name"]): row for row in report["rows"]}
    # lr-2 does not depend on the tier; dcnv2 is every row's pair.
    assert by_row["kar", "lr-2"]["aucs"] == by_row["full", "lr-2"]["aucs"]
    assert by_row["kar", "dcnv2"]["paired_deltas"] == [0.0]
    marc = by_row["full", "marc-c"]
    assert marc["paired_deltas"] == [marc["aucs"][0] - by_row["full", "dcnv2"]["aucs"][0]]
    assert report["text_stats"]["users"] == 2999
    assert "| full | marc-c |" in result.stdout and (tmp_path / "run" / "evaluate.md").is_file()

    before = (tmp_path / "run" / "evaluate.json").read_text()
    zoo = ["evaluate", "--run-dir", str(tmp_path / "run"), "--tier", "kar", *small]
    result = CliRunner().invoke(main, [*zoo, "--ranker", "deepfm", "--ranker", "din"])
    assert result.exit_code == 0, result.output
    for ranker in ("deepfm", "din"):
        report = json.loads((tmp_path / "run" / f"evaluate-{ranker}.json").read_text())
        assert [row["name"] for row in report["rows"]] == [ranker, *names[1:]]
        assert report["downstream"]["ranker"] == ranker
        assert {row["baseline"] for row in report["rows"]} == {ranker}
        assert f"paired delta vs {ranker}" in result.stdout
    assert (tmp_path / "run" / "evaluate.json").read_text() == before


def test_errors_are_one_line_with_non_zero_exit(tmp_path):
    result = CliRunner().invoke(
        main, ["fit", "--run-dir", str(tmp_path), "--set", "training.epoch=2"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("Error: config: unknown key 'training.epoch'")
    verbose = CliRunner().invoke(
        main, ["fit", "--verbose", "--run-dir", str(tmp_path), "--set", "training.epoch=2"]
    )
    assert "Traceback" in verbose.stderr


def test_data_describe_counts_the_shared_copy(ml1m_dir):
    result = CliRunner().invoke(main, ["data", "describe", "--data-dir", str(ml1m_dir)])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["interactions"] == 487650 and counts["users_with_interactions"] == 2999


def test_data_describe_names_a_missing_directory(tmp_path):
    result = CliRunner().invoke(main, ["data", "describe", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert (
        "lacks the MovieLens-1M files" in result.stderr
        and "marc-keras data download" in result.stderr
    )


def test_compare_refuses_unknown_methods_before_any_work(tmp_path):
    result = CliRunner().invoke(
        main, ["compare", "--output-dir", str(tmp_path / "out"), "--methods", "marc-c,mrl2"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: Unknown method(s) ['mrl2']; valid methods are: frozen, pca"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folds", [None, 3])
def test_compare_all_holds_the_cross_fitted_row_only_when_the_config_cross_fits(
    folds, tmp_path, monkeypatch
):
    import marc_keras.experiments.comparison as comparison

    asked = []

    def record(config, names, output_dir, log, train_only):
        asked.extend(names)
        return {"fit_seconds": {}}

    monkeypatch.setattr(comparison, "compare_methods", record)
    overrides = (
        []
        if folds is None
        else [
            "--set",
            f"training.cross_fit_folds={folds}",
            "--set",
            "training.head_warmup_epochs=1",
        ]
    )
    result = CliRunner().invoke(
        main, ["compare", "--output-dir", str(tmp_path), "--train-only", *overrides]
    )
    assert result.exit_code == 0, result.output
    assert ("marc-c-cross-fit" in asked) == (folds is not None)
    assert "marc-c" in asked and "marc-no-hsic" in asked


def test_a_data_dir_with_backslashes_and_quotes_is_taken_as_a_path(tmp_path):
    strange = tmp_path / 'C:\\data\\"ml-1m"'
    result = CliRunner().invoke(
        main, ["fit", "--run-dir", str(tmp_path / "run"), "--data-dir", str(strange)]
    )
    assert result.exit_code == 1
    assert str(strange) in result.stderr and "lacks the MovieLens-1M files" in result.stderr


@pytest.mark.slow
def test_rerank_and_retrieval_on_cold_items_from_the_cli(tiny_preset, ml1m_dir, tmp_path):
    from marc_keras.config import RunConfig
    from marc_keras.experiments.marc_run import build_split

    run_dir = tmp_path / "run"
    tiny = [
        f'model.preset="{tiny_preset}"',
        "model.lora_rank=2",
        "model.max_length=24",
        "model.compressed_dim=8",
        "training.train_samples=64",
        "training.validation_samples=16",
        "training.test_samples=16",
        "training.batch_size=16",
        "evaluate.cold_item_share=0.2",
    ]
    fit = ["fit", "--run-dir", str(run_dir), "--data-dir", str(ml1m_dir)]
    result = CliRunner().invoke(main, fit + [arg for key in tiny for arg in ("--set", key)])
    assert result.exit_code == 0, result.output
    # MARC's own training pairs come from this split: no cold item among them.
    split = build_split(RunConfig.from_file(run_dir / "config.json"))
    assert split.cold_items is not None
    assert not set(split.samples["train"].item_id) & split.cold_items.all

    small = ["--set", "evaluate.seeds=[0]", "--set", "evaluate.max_epochs=1"]
    evaluate = ["evaluate", "--run-dir", str(run_dir), "--task", "retrieval", "--task", "rerank"]
    result = CliRunner().invoke(main, evaluate + small)
    assert result.exit_code == 0, result.output
    names = ["random", "profile", "frozen", "pca-8", "marc-o", "marc-c"]
    for task, references in (("retrieval", ["base", "popularity"]), ("rerank", ["prm"])):
        report = json.loads((run_dir / f"evaluate-{task}-cold.json").read_text())
        assert report["split"] == "cold" and report["runs_trained_on_cold_items"] == []
        assert [row["name"] for row in report["rows"]] == [*references, *names]
        baseline = references[0]
        assert not any(row["marc_saw_cold_items"] for row in report["rows"])
        assert f"| cold | {baseline} |" in result.stdout

    other_share = ["--cold-items", "0.3", "--task", "retrieval"]
    result = CliRunner().invoke(main, ["evaluate", "--run-dir", str(run_dir), *other_share, *small])
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "evaluate-retrieval-cold.json").read_text())
    assert report["cold_item_share"] == 0.3 and report["runs_trained_on_cold_items"]
    saw = {row["name"] for row in report["rows"] if row["marc_saw_cold_items"]}
    assert saw == {"marc-o", "marc-c"} and "trained on cold items' pairs" in result.stdout

    result = CliRunner().invoke(main, ["evaluate", "--run-dir", str(run_dir), *small])
    assert result.exit_code == 1
    assert "evaluate.cold_item_share is for the re-ranking and retrieval tables" in result.stderr
