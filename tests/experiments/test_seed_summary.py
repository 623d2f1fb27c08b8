import pytest

from marc_keras.experiments.seed_summary import add_paired_deltas, summarise_seeds


def test_means_stds_and_same_seed_deltas_by_hand():
    rows = [
        {"name": "base", **summarise_seeds([{"ndcg": 0.2}, {"ndcg": 0.4}], ["ndcg"])},
        {"name": "text", **summarise_seeds([{"ndcg": 0.5}, {"ndcg": 0.5}], ["ndcg"])},
    ]
    assert rows[0]["ndcg_mean"] == pytest.approx(0.3) and rows[0]["ndcgs"] == [0.2, 0.4]
    add_paired_deltas(rows, "base", ["ndcg"])
    # deltas 0.3 and 0.1: mean 0.2, spread as `mean_std` reports it
    assert rows[1]["paired_delta_vs_base_ndcg_mean"] == pytest.approx(0.2)
    assert rows[1]["paired_delta_vs_base_ndcg_std"] == pytest.approx(rows[0]["ndcg_std"])
    assert rows[0]["paired_delta_vs_base_ndcg_mean"] == 0.0
    untouched = [{"name": "text", "ndcgs": [0.5]}]
    add_paired_deltas(untouched, "base", ["ndcg"])
    assert untouched == [{"name": "text", "ndcgs": [0.5]}]
