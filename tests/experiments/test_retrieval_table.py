import numpy as np
import pandas as pd
import pytest

from marc_keras.data.cold_items import ColdItems
from marc_keras.experiments.downstream_rows import vector_provider
from marc_keras.experiments.retrieval_table import RetrievalSettings, retrieval_table
from marc_keras.ranking.ranking_features import RankingFeatures


@pytest.fixture(scope="module")
def small(first_users_split):
    return first_users_split(300)


def _planted(split, features):
    # Each item's log click count over every split: popularity the retriever
    # can only learn for cold items through the vector rows.
    samples = pd.concat(split.samples.values())
    clicks = samples[samples.label > 0].groupby("item_id").size()
    item_ids = np.asarray(sorted(split.item_texts))
    items = np.log1p(clicks.reindex(item_ids).fillna(0).to_numpy("float32"))[:, None]
    user_ids = np.asarray(sorted(split.user_texts))
    users = np.zeros((len(user_ids), 1), "float32")
    return vector_provider(features, lambda seed: ((user_ids, users), (item_ids, items)))


@pytest.mark.slow
def test_warm_and_cold_tables_rank_with_a_planted_vector_above_base(small):
    split, data = small
    settings = RetrievalSettings(seeds=(0, 1), max_epochs=3, patience=1, batch_size=256)
    features = RankingFeatures(split, data)
    rows = retrieval_table(split, features, {"base": None, "planted": _planted(split, features)},
                           settings, log=print)  # fmt: skip
    by_name = {row["name"]: row for row in rows}
    assert [row["name"] for row in rows] == ["base", "popularity", "planted"]
    assert {row["split"] for row in rows} == {"warm"}
    popularity = by_name.pop("popularity")
    assert popularity["ndcg@20s"][0] == popularity["ndcg@20s"][1] and popularity["epochs"] == [0, 0]
    for row in by_name.values():
        assert len(row["ndcg@20s"]) == 2 and all(1 <= epoch <= 3 for epoch in row["epochs"])
        assert set(row["item_id_dropouts"]) <= {0.0, 0.5}
        for metric in ("hr@10", "hr@50", "ndcg@20", "mrr", "validation_ndcg@20"):
            assert 0 <= row[f"{metric}_mean"] <= 1
        assert row["hr@10_mean"] <= row["hr@20_mean"] <= row["hr@50_mean"]
    assert by_name["base"]["paired_delta_vs_base_ndcg@20_mean"] == 0.0

    cold_split = split.holding_out(ColdItems.draw(split, 0.2, seed=0))
    cold_features = RankingFeatures(cold_split, data)
    rows = retrieval_table(
        cold_split,
        cold_features,
        {"base": None, "planted": _planted(split, cold_features)},
        settings,
        log=print,
    )
    by_name = {row["name"]: row for row in rows}
    assert {row["split"] for row in rows} == {"cold"}
    assert by_name["planted"]["paired_delta_vs_base_ndcg@20_mean"] > 0.02
