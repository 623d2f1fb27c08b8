import numpy as np
import pandas as pd
import pytest

from marc_keras.data.interaction_data import InteractionData
from marc_keras.data.kar_split import KARSplit, SplitConfig
from marc_keras.data.movie_lens import MovieLens
from marc_keras.experiments.downstream_rows import vector_provider
from marc_keras.experiments.rerank_table import RerankSettings, rerank_table
from marc_keras.ranking.ranking_features import RankingFeatures


@pytest.fixture(scope="module")
def small(ml1m_dir):
    full = MovieLens.load(ml1m_dir)
    keep = full.interactions["user_id"].astype(int) <= 150
    data = InteractionData(full.interactions[keep].reset_index(drop=True), full.items, full.users)
    split = KARSplit.build(data, MovieLens.text_templates(), SplitConfig())
    return split, RankingFeatures(split, data)


def test_vectors_that_carry_the_signal_beat_prm_alone(small):
    split, features = small
    # An item vector holding the item's click rate over every split: a planted
    # signal PRM can only use through the vector rows.
    samples = pd.concat(split.samples.values())
    rate = samples.groupby("item_id").label.mean()
    item_ids = np.asarray(sorted(split.item_texts))
    items = rate.reindex(item_ids).fillna(rate.mean()).to_numpy("float32")[:, None]
    user_ids = np.asarray(sorted(split.user_texts))
    users = np.zeros((len(user_ids), 1), "float32")
    planted = vector_provider(features, lambda seed: ((user_ids, users), (item_ids, items)))
    settings = RerankSettings(seeds=(0, 1), max_epochs=3, patience=1)
    rows = rerank_table(split, features, {"prm": None, "planted": planted}, settings, log=print)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"prm", "planted"}
    for row in rows:
        assert all(1 <= epoch <= 3 for epoch in row["epochs"])
        for k in (1, 3, 5, 7):
            assert 0 <= row[f"map@{k}_mean"] <= 1 and 0 <= row[f"ndcg@{k}_mean"] <= 1
            assert len(row[f"map@{k}s"]) == 2
    assert by_name["prm"]["paired_delta_vs_prm_map@5_mean"] == 0.0
    assert by_name["planted"]["paired_delta_vs_prm_map@5_mean"] > 0.02
    assert by_name["planted"]["map@5_mean"] > by_name["prm"]["map@5_mean"]
