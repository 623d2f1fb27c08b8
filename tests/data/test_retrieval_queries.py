import pytest

from marc_keras.data.cold_items import ColdItems
from marc_keras.data.retrieval_queries import RetrievalQueries


@pytest.fixture(scope="module")
def split(first_users_split):
    return first_users_split(150)[0]


def test_queries_hold_the_text_half_and_the_clicked_ranker_side_items(split):
    queries = RetrievalQueries.from_split(split, "test")
    assert len(queries) and queries.item_set == "warm"
    assert len(queries.candidate_ids) == len(split.item_texts)
    samples = split.samples["test"]
    for user, history, found in zip(queries.user_ids, queries.histories, queries.positives):
        assert history == list(split.text_halves[user][0])
        clicked = set(samples[(samples.user_id == user) & (samples.label > 0)].item_id)
        assert set(found) == clicked - set(history) and len(found) == len(set(found))
    users, items = queries.pairs()
    assert len(users) == len(items) == sum(len(found) for found in queries.positives)


def test_cold_queries_rank_only_their_splits_cold_items(split):
    cold = ColdItems.draw(split, 0.2, seed=0)
    held = split.holding_out(cold)
    test = RetrievalQueries.from_split(held, "test", cold, "cold")
    assert set(test.candidate_ids) == cold.test
    assert all(set(found) <= cold.test for found in test.positives)
    train = RetrievalQueries.from_split(held, "train", cold, "warm")
    assert not set(train.candidate_ids) & cold.all
    assert not {item for found in train.positives for item in found} & cold.all


def test_cold_queries_need_cold_items_and_a_judged_split(split):
    with pytest.raises(ValueError, match="cold_item_share"):
        RetrievalQueries.from_split(split, "test", None, "cold")
    cold = ColdItems.draw(split, 0.2)
    with pytest.raises(ValueError, match="validation or test"):
        RetrievalQueries.from_split(split, "train", cold, "cold")
    with pytest.raises(ValueError, match="Unknown item set"):
        RetrievalQueries.from_split(split, "test", cold, "lukewarm")


def test_seen_items_are_excluded_from_each_users_ranking(split, first_users_split):
    from marc_keras.experiments.retrieval_table import _prepare
    from marc_keras.ranking.ranking_features import RankingFeatures

    features = RankingFeatures(split, first_users_split(150)[1])
    prepared = _prepare(RetrievalQueries.from_split(split, "test"), features, 30)
    candidates = prepared.queries.candidate_ids.tolist()
    for row, history in enumerate(prepared.queries.histories):
        excluded = {candidates[column] for column in prepared.excluded[row].nonzero()[0]}
        assert excluded == set(history)
        assert not (prepared.excluded[row] & prepared.positives[row]).any()
