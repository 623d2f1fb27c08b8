import numpy as np
import pandas as pd
import pytest

from marc_keras.experiments.downstream_rows import vector_provider
from marc_keras.experiments.rerank_table import RerankSettings, rerank_table
from marc_keras.ranking.ranking_features import RankingFeatures


@pytest.fixture(scope="module")
def small(first_users_split):
    split, data = first_users_split(150)
    return split, RankingFeatures(split, data)


def _click_rate_vectors(split, features):
    """Item vectors holding each item's click rate over every split: a planted
    signal PRM can only use through the vector rows."""
    samples = pd.concat(split.samples.values())
    rate = samples.groupby("item_id").label.mean()
    item_ids = np.asarray(sorted(split.item_texts))
    items = rate.reindex(item_ids).fillna(rate.mean()).to_numpy("float32")[:, None]
    user_ids = np.asarray(sorted(split.user_texts))
    users = np.zeros((len(user_ids), 1), "float32")
    return vector_provider(features, lambda seed: ((user_ids, users), (item_ids, items)))


def test_vectors_that_carry_the_signal_beat_prm_alone(small):
    split, features = small
    planted = _click_rate_vectors(split, features)
    settings = RerankSettings(seeds=(0, 1), max_epochs=3, patience=1)
    rows = rerank_table(split, features, {"prm": None, "planted": planted}, settings, log=print)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"prm", "planted"}
    for row in rows:
        # Warm lists are one fold: one epoch and one validation value per seed.
        assert all(len(seed) == 1 and 1 <= seed[0] <= 3 for seed in row["epochs"])
        assert len(row["validation_map@5s"]) == 2
        assert all(0 <= value <= 1 for (value,) in row["validation_map@5s"])
        # With one fold the pooled test metric is the fold's own.
        assert [fold for (fold,) in row["fold_map@5s"]] == row["map@5s"]
        for k in (1, 3, 5, 7):
            assert 0 <= row[f"map@{k}_mean"] <= 1 and 0 <= row[f"ndcg@{k}_mean"] <= 1
            assert len(row[f"map@{k}s"]) == 2
    assert by_name["prm"]["paired_delta_vs_prm_map@5_mean"] == 0.0
    assert by_name["planted"]["paired_delta_vs_prm_map@5_mean"] > 0.02
    assert by_name["planted"]["map@5_mean"] > by_name["prm"]["map@5_mean"]


def test_cold_lists_hold_only_their_splits_cold_items_and_text_still_ranks_them(small):
    from marc_keras.data.cold_items import ColdItems
    from marc_keras.experiments.rerank_table import _lists

    split, features = small
    cold_split = split.holding_out(ColdItems.draw(split, 0.2, seed=0))
    cold = cold_split.cold_items
    train = _lists(cold_split, "train", cold, seed=0)
    assert not set(train.item_ids.ravel()) & cold.all
    for name in ("validation", "test"):
        lists = _lists(cold_split, name, cold, seed=0)
        assert len(lists) and set(lists.item_ids.ravel()) <= cold.of(name)
    planted = _click_rate_vectors(split, features)
    settings = RerankSettings(seeds=(0, 1), max_epochs=2, patience=1)
    rows = {"prm": None, "planted": planted}
    rows = rerank_table(cold_split, features, rows, settings, log=print)
    by_name = {row["name"]: row for row in rows}
    assert {row["split"] for row in rows} == {"cold"}
    # KAR's MAP@k divides by the hits inside the top k, so it can fall as
    # NDCG rises; NDCG is the check.
    assert by_name["planted"]["paired_delta_vs_prm_ndcg@5_mean"] > 0.01
    for row in rows:
        assert all(len(seed) == 2 for seed in row["epochs"] + row["validation_map@5s"])


def test_cold_folds_pool_both_halves_test_lists_and_one_fold_is_coldrecs_split(small):
    from marc_keras.data.cold_items import ColdItems
    from marc_keras.experiments.rerank_table import _lists

    split, features = small
    cold = ColdItems.draw(split, 0.2, seed=0)
    swapped = cold.swapped()
    assert swapped.validation == cold.test and swapped.test == cold.validation
    assert swapped.all == cold.all and swapped.swapped() == cold
    cold_split = split.holding_out(cold)
    train = _lists(cold_split, "train", cold, seed=0)
    swapped_train = _lists(cold_split, "train", swapped, seed=0)
    np.testing.assert_array_equal(train.item_ids, swapped_train.item_ids)
    rows = {"prm": None}
    one = RerankSettings(seeds=(0,), max_epochs=2, patience=1, cold_item_folds=1)
    two = RerankSettings(seeds=(0,), max_epochs=2, patience=1)
    (single,) = rerank_table(cold_split, features, rows, one, log=print)
    (pooled,) = rerank_table(cold_split, features, rows, two, log=print)
    # Two epochs at most, so both tables train both: the first fold is the
    # one-fold table (same PRM, same chosen epoch, same test lists).
    assert pooled["fold_map@5s"][0][0] == pytest.approx(single["map@5s"][0])
    assert pooled["epochs"][0][0] == single["epochs"][0][0]
    # Pooled over both folds' test lists: the list-count weighted mean of the folds.
    counts = [len(_lists(cold_split, "test", fold, seed=12345)) for fold in (cold, swapped)]
    expected = np.average(pooled["fold_ndcg@5s"][0], weights=counts)
    assert pooled["ndcg@5s"][0] == pytest.approx(expected)


def test_cold_item_folds_other_than_one_or_two_are_refused():
    with pytest.raises(ValueError, match="cold_item_folds must be 1"):
        RerankSettings(cold_item_folds=3)


def test_prms_trained_in_worker_processes_match_those_trained_here(small):
    import torch

    split, features = small
    planted = _click_rate_vectors(split, features)
    rows = {"prm": None, "planted": planted}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # workers get 1 // 2 -> one thread: the same arithmetic
    try:
        tables = [
            rerank_table(
                split,
                features,
                rows,
                RerankSettings(seeds=(0, 1), max_epochs=2, patience=1, processes=processes),
                log=print,
            )
            for processes in (1, 2)
        ]
    finally:
        torch.set_num_threads(threads)
    here, workers = tables
    for mine, theirs in zip(here, workers):
        assert mine["name"] == theirs["name"] and mine["epochs"] == theirs["epochs"]
        for metric in ("map@5s", "ndcg@5s", "validation_map@5s"):
            np.testing.assert_allclose(mine[metric], theirs[metric], rtol=1e-6)


@pytest.mark.parametrize("processes", [0, 1.5, True])
def test_processes_must_be_a_whole_number_of_at_least_one(processes):
    with pytest.raises(ValueError, match="processes must be a whole number"):
        RerankSettings(processes=processes)
