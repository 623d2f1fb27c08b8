import json

import numpy as np
import pytest
from click.testing import CliRunner

from marc_keras.cli.main import main
from marc_keras.config import RunConfig
from marc_keras.data import MovieLens
from marc_keras.experiments.marc_run import MARCRun
from marc_keras.export.embedding_store import EmbeddingStore

DIM = 8
SMALL = [
    "--seeds", "0",
    "--set", "evaluate.train_samples=2000",
    "--set", "evaluate.max_epochs=1",
    "--set", 'evaluate.tiers=["kar"]',
]  # fmt: skip


@pytest.fixture(scope="module")
def stores(ml1m_dir, tmp_path_factory):
    """Random vectors for every user (int ids) and item (string ids) of the shared copy."""
    data = MovieLens.load(ml1m_dir)
    directory = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(0)
    paths = {}
    for tower, ids in (
        ("user", data.users["user_id"].astype(int)),
        ("item", data.items["item_id"]),
    ):
        paths[tower] = directory / f"{tower}s.parquet"
        with EmbeddingStore.writer(paths[tower], {"compressed": DIM, "original": 2 * DIM}) as store:
            store.append(
                np.asarray(ids),
                {
                    "compressed": rng.normal(size=(len(ids), DIM)),
                    "original": rng.normal(size=(len(ids), 2 * DIM)),
                },
            )
    return paths


@pytest.fixture
def run_dir(ml1m_dir, tmp_path):
    config = RunConfig.from_dict({"data": {"data_dir": str(ml1m_dir)}})
    return MARCRun.open(tmp_path / "run", config).run_dir


def rank(run_dir, stores, *args):
    return CliRunner().invoke(
        main,
        [
            "rank",
            "--run-dir",
            str(run_dir),
            "--user-store",
            str(stores["user"]),
            "--item-store",
            str(stores["item"]),
            *args,
        ],
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["keras", "tfrs"])
def test_rank_trains_on_the_stores_and_writes_a_report(run_dir, stores, engine):
    result = rank(run_dir, stores, "--engine", engine, "--column", "original", *SMALL)
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / f"rank-{engine}.json").read_text())
    (row,) = report["rows"]  # one tier, one seed
    assert (
        row["name"] == f"{engine}-original" and len(row["aucs"]) == 1 and 0.5 < row["auc_mean"] < 1
    )
    # Both engines train the configured tiers with the adaptor setting of their row.
    assert row["tier"] == "kar" and row["adaptor_setting"]["input_dropout"] == 0.5
    if engine == "tfrs":
        (run,) = report["runs"]
        assert run["tier"] == "kar" and run["train_samples"] == 2000 and run["epochs"] == 1
    assert report["missing"] == {"user": 0, "item": 0} and report["seeds"] == [0]
    assert report["downstream"]["train_samples"] == 2000
    assert f"| {engine}-original | {row['auc_mean']:.4f} +- n/a |" in result.stdout


def test_rank_names_the_columns_a_store_has(run_dir, stores):
    result = rank(run_dir, stores, "--column", "middle")
    assert result.exit_code == 1
    assert (
        "has no vector column 'middle'" in result.stderr
        and "['compressed', 'original']" in result.stderr
    )


def test_rank_refuses_bad_seeds(run_dir, stores):
    result = rank(run_dir, stores, "--seeds", "0,one")
    assert result.exit_code == 2 and "--seeds" in result.stderr
