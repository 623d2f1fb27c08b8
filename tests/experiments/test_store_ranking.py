import numpy as np
import pytest

from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.data import MovieLens
from marc_keras.experiments.marc_run import build_split
from marc_keras.experiments.store_ranking import rank_tables
from marc_keras.export.embedding_store import EmbeddingStore
from marc_keras.ranking.ranking_features import RankingFeatures
from marc_keras.ranking.tfrs_ranker import read_store_vectors

DIM = 16


@pytest.mark.slow
def test_keras_and_tfrs_engines_agree_on_the_same_stores(ml1m_dir, tmp_path):
    # Both engines read one DownstreamConfig: the kar and full tiers, the
    # per-seed subsample, learning rate, batch size, epochs, early stopping,
    # cross rank 16 and the generic adaptor setting (input dropout 0.5, L2
    # 1e-3). Only their random draws differ, so their test AUCs must agree.
    data = MovieLens.load(ml1m_dir)
    rng = np.random.default_rng(0)
    split, interactions = build_split(
        RunConfig.from_dict({"data": {"data_dir": str(ml1m_dir)}}), with_interactions=True
    )
    features = RankingFeatures(split, interactions)
    tables = {}
    for tower, ids in (
        ("user", data.users["user_id"].astype(int)),
        ("item", data.items["item_id"]),
    ):
        path = tmp_path / f"{tower}s.parquet"
        with EmbeddingStore.writer(path, {"original": DIM}) as store:
            store.append(np.asarray(ids), {"original": rng.normal(size=(len(ids), DIM))})
        tables[tower] = features.vector_table(*read_store_vectors(path, "original"), tower)
    config = DownstreamConfig(
        train_samples=20000, batch_size=512, max_epochs=10, seeds=(0,), tiers=("kar", "full")
    )
    rows = {
        engine: rank_tables(
            features, tables, config, engine, f"{engine}-original", log=lambda line: None, threads=1
        )["rows"]
        for engine in ("keras", "tfrs")
    }
    for keras_row, tfrs_row in zip(rows["keras"], rows["tfrs"], strict=True):
        assert keras_row["tier"] == tfrs_row["tier"]
        assert keras_row["adaptor_setting"] == tfrs_row["adaptor_setting"]
        assert keras_row["auc_mean"] > 0.7
        assert abs(keras_row["auc_mean"] - tfrs_row["auc_mean"]) < 0.003, (keras_row, tfrs_row)
    # The full tier's features lift both engines alike.
    assert [row["tier"] for row in rows["tfrs"]] == ["kar", "full"]
    assert rows["tfrs"][1]["auc_mean"] > rows["tfrs"][0]["auc_mean"] + 0.005
