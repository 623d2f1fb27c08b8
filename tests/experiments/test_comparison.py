import json

import numpy as np
import pytest

from marc_keras.config import RunConfig
from marc_keras.experiments.comparison import (
    add_paired_deltas_vs,
    beats_by_one_std,
    compare_methods,
    to_markdown,
)
from marc_keras.experiments.marc_run import build_split
from marc_keras.probing.linear_cka import linear_cka


def _row(name, mean, std):
    return {
        "tier": "kar",
        "name": name,
        "seconds": 10.0,
        "auc_mean": mean,
        "auc_std": std,
        "logloss_mean": 0.5,
        "logloss_std": 0.01,
    }


def test_beating_by_one_std_uses_the_larger_spread():
    marc_c = _row("marc-c", 0.800, 0.002)
    assert beats_by_one_std(marc_c, _row("pca", 0.790, 0.003))
    assert not beats_by_one_std(marc_c, _row("pca", 0.799, 0.0005))
    assert not beats_by_one_std(marc_c, _row("mrl", 0.805, 0.001))
    table = to_markdown(
        [
            {**marc_c, "relaimpr_vs_marc_c": 0.0},
            {
                **_row("pca", 0.79, 0.003),
                "relaimpr_vs_marc_c": -0.0333,
                "marc_c_beats_by_one_std": True,
            },
        ]
    )
    assert "| kar | marc-c | 0.8000 +- 0.0020 | - | - | 0.5000 +- 0.0100 |" in table
    assert table.splitlines()[0].endswith(
        "| RelaImpr vs marc-c | MARC-C better by > 1 std | paired delta vs pca | own test AUC "
        "| train pairs / min | HSIC gradient share (compression / lora) "
        "| CKA(r, c) validation users |"
    )
    assert table.splitlines()[2].endswith("| +0.00% | - | - | - | - | - | - |")
    assert table.splitlines()[3].endswith("| -3.33% | yes | - | - | - | - | - |")
    trained = to_markdown(
        [
            {
                **marc_c,
                "paired_delta_vs_pca_mean": 0.012,
                "paired_delta_vs_pca_std": 0.003,
                "own_test_auc": 0.7012,
                "own_test_auc_std": 0.004,
                "train_pairs": 12800,
                "train_minutes": 3.52,
                "gradient_share_hsic": {"compression": 0.0381, "lora": 0.0123},
                "cka_r_c": 0.4917,
            }
        ]
    )
    assert trained.splitlines()[2].endswith(
        "| - | - | +0.0120 +- 0.0030 | 0.7012 +- 0.0040 | 12,800 / 3.5 | 0.038 / 0.012 | 0.492 |"
    )


def test_paired_deltas_subtract_the_same_tier_and_seed():
    rows = [
        {"tier": "kar", "name": "pca", "aucs": [0.70, 0.72, 0.71]},
        {"tier": "kar", "name": "marc-c", "aucs": [0.71, 0.74, 0.70]},
        {"tier": "full", "name": "pca", "aucs": [0.80, 0.80, 0.80]},
        {"tier": "full", "name": "marc-c", "aucs": [0.81, 0.79, 0.80]},
        {"tier": "other", "name": "marc-c", "aucs": [0.5, 0.5, 0.5]},
    ]
    add_paired_deltas_vs(rows, "pca")
    # kar: deltas 0.01, 0.02, -0.01 -> mean 0.00667, sample std 0.01528.
    assert rows[1]["paired_delta_vs_pca_mean"] == pytest.approx(0.02 / 3)
    assert rows[1]["paired_delta_vs_pca_std"] == pytest.approx(0.0152753, abs=1e-6)
    assert rows[3]["paired_delta_vs_pca_mean"] == pytest.approx(0.0)
    assert rows[3]["paired_delta_vs_pca_std"] == pytest.approx(0.01)
    assert rows[0]["paired_delta_vs_pca_mean"] == 0.0 == rows[0]["paired_delta_vs_pca_std"]
    assert "paired_delta_vs_pca_mean" not in rows[4]  # no pca row in its tier


def _tiny_compare_config(tiny_preset, ml1m_dir, seeds="[0]", extra=()):
    return RunConfig.from_file(
        None,
        [
            f'model.preset="{tiny_preset}"',
            f'data.data_dir="{ml1m_dir}"',
            "model.lora_rank=2",
            "model.max_length=24",
            "model.compressed_dim=8",
            "model.mrl_prefixes=[2, 4]",
            "training.train_samples=32",
            "training.validation_samples=16",
            "training.test_samples=16",
            "training.batch_size=16",
            f"evaluate.seeds={seeds}",
            "evaluate.train_samples=2000",
            "evaluate.max_epochs=1",
            'evaluate.tiers=["kar"]',
            *extra,
        ],
    )


@pytest.mark.slow
def test_compare_trains_each_run_once_and_writes_the_table(tiny_preset, ml1m_dir, tmp_path):
    config = _tiny_compare_config(tiny_preset, ml1m_dir)
    methods = ["frozen", "pca", "mrl", "marc-c", "marc-o"]
    trained_alone = compare_methods(config, ["mrl"], tmp_path, log=lambda _: None, train_only=True)
    assert (
        list(trained_alone["fit_seconds"]) == ["mrl"] and not (tmp_path / "compare.json").exists()
    )
    lines = []
    report = compare_methods(config, methods, tmp_path, log=lines.append)
    assert any(
        line.endswith(
            "is a finished run; its metrics are in "
            + str(tmp_path / "runs" / "mrl" / "seed0" / "metrics.json")
        )
        for line in lines
    )
    assert [row["name"] for row in report["rows"]] == ["dcnv2", "lr-2", *methods]
    progress = json.loads((tmp_path / "compare-progress.json").read_text())["results"]
    assert sorted(progress) == sorted(f"kar/{name}/0" for name in ["dcnv2", "lr-2", *methods])
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["marc", "mrl"]
    marc_c = next(row for row in report["rows"] if row["name"] == "marc-c")
    assert marc_c["relaimpr_vs_marc_c"] == 0.0
    # One seed has no std: no row is said to be beaten by more than one.
    assert all(row["marc_c_beats_by_one_std"] is None for row in report["rows"])
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["rows"][2]["name"] == "frozen" and (
        tmp_path / "compare.md"
    ).read_text().startswith("| tier | representation |")
    pca = next(row for row in report["rows"] if row["name"] == "pca")
    assert marc_c["paired_delta_vs_pca_mean"] == pytest.approx(marc_c["aucs"][0] - pca["aucs"][0])
    own = json.loads((tmp_path / "runs" / "marc" / "seed0" / "metrics.json").read_text())
    assert marc_c["own_test_auc"] == own["test"]["auc"]
    assert marc_c["train_pairs"] == own["train_pairs"] == 32  # one epoch of 32 pairs
    assert marc_c["train_minutes"] == pytest.approx(own["timings"]["fit_s"] / 60)
    assert "own_test_auc" not in pca
    mrl_config = json.loads((tmp_path / "runs" / "mrl" / "seed0" / "config.json").read_text())
    assert mrl_config["model"]["objective"] == "mrl" and mrl_config["model"]["hsic_weight"] == 0.0


@pytest.mark.slow
def test_compare_trains_every_method_at_a_seed_before_the_next_seed(
    tiny_preset, ml1m_dir, tmp_path
):
    config = _tiny_compare_config(tiny_preset, ml1m_dir, seeds="[0, 1]")
    lines = []
    report = compare_methods(
        config, ["mrl", "marc-c", "marc-o"], tmp_path, log=lines.append, train_only=True
    )
    order = [line for line in lines if line.startswith("training ")]
    assert order == [
        "training mrl seed 0",
        "training marc seed 0",
        "training mrl seed 1",
        "training marc seed 1",
    ]
    assert {name: len(seconds) for name, seconds in report["fit_seconds"].items()} == {
        "mrl": 2,
        "marc": 2,
    }


def test_the_cross_fitted_row_needs_the_folds_setting(tmp_path):
    with pytest.raises(ValueError, match=r"training\.cross_fit_folds"):
        compare_methods(RunConfig(), ["marc-c", "marc-c-cross-fit"], tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_compare_cross_fits_only_the_run_of_the_cross_fitted_row(tiny_preset, ml1m_dir, tmp_path):
    config = _tiny_compare_config(
        tiny_preset,
        ml1m_dir,
        extra=[
            "training.head_warmup_epochs=1",
            "training.cross_fit_folds=2",
            "model.hsic_weight=1.0",
        ],
    )
    methods = ["marc-c", "marc-c-cross-fit", "marc-no-hsic"]
    report = compare_methods(config, methods, tmp_path, log=lambda _: None)
    runs = tmp_path / "runs"
    folds = {
        name: json.loads((runs / name / "seed0" / "config.json").read_text())["training"][
            "cross_fit_folds"
        ]
        for name in ("marc", "marc-no-hsic")
    }
    assert folds == {"marc": 2, "marc-no-hsic": None}
    assert not (runs / "marc-no-hsic" / "seed0" / "cross-fit-vectors.npz").exists()
    rows = {row["name"]: row for row in report["rows"]}
    metrics = json.loads((runs / "marc" / "seed0" / "metrics.json").read_text())
    assert (
        rows["marc-c"]["gradient_share_hsic"] == metrics["gradient_shares"]["gradient_share_hsic"]
    )
    assert rows["marc-c"]["gradient_share_hsic"]["compression"] > 0
    assert rows["marc-no-hsic"]["gradient_share_hsic"]["compression"] == 0.0
    assert "gradient_share_hsic" not in rows["marc-c-cross-fit"]
    validation_users = build_split(config).users["validation"]
    with (
        np.load(runs / "marc" / "seed0" / "vectors.npz") as vectors,
        np.load(runs / "marc" / "seed0" / "cross-fit-vectors.npz") as cross_fit,
    ):
        users = np.isin(vectors["user_ids"], validation_users)
        original = vectors["marc-o/user"][users]
        expected = {
            "marc-c": linear_cka(original, vectors["marc-c/user"][users]),
            "marc-c-cross-fit": linear_cka(original, cross_fit["marc-c-cross-fit/user"][users]),
        }
    assert rows["marc-c"]["cka_r_c"] == pytest.approx(expected["marc-c"])
    assert rows["marc-c-cross-fit"]["cka_r_c"] == pytest.approx(expected["marc-c-cross-fit"])
    assert rows["marc-c-cross-fit"]["cka_r_c"] != pytest.approx(expected["marc-c"])


@pytest.mark.slow
def test_compare_with_more_seeds_keeps_the_rows_it_has(tiny_preset, ml1m_dir, tmp_path):
    first = compare_methods(
        _tiny_compare_config(tiny_preset, ml1m_dir), ["frozen"], tmp_path, log=lambda _: None
    )
    lines = []
    second = compare_methods(
        _tiny_compare_config(tiny_preset, ml1m_dir, seeds="[0, 1]"),
        ["frozen"],
        tmp_path,
        log=lines.append,
    )
    scored = [line.split(":")[0] for line in lines if "test AUC" in line]
    assert scored == ["kar dcnv2 seed 1", "kar lr-2 seed 1", "kar frozen seed 1"]
    for before, after in zip(first["rows"], second["rows"]):
        assert after["aucs"][0] == before["aucs"][0]
    lines.clear()
    compare_methods(
        _tiny_compare_config(
            tiny_preset, ml1m_dir, seeds="[0, 1]", extra=["evaluate.row_adaptors={frozen={}}"]
        ),
        ["frozen"],
        tmp_path,
        log=lines.append,
    )
    scored = [line.split(":")[0] for line in lines if "test AUC" in line]
    assert scored == ["kar frozen seed 0", "kar frozen seed 1"]
