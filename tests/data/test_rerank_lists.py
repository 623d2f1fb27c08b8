import numpy as np
import pytest

from marc_keras.data.kar_split import KARSplit, SplitConfig
from marc_keras.data.movie_lens import MovieLens
from marc_keras.data.rerank_lists import RerankLists


@pytest.fixture(scope="module")
def split(ml1m_dir):
    return KARSplit.build(MovieLens.load(ml1m_dir), MovieLens.text_templates(), SplitConfig())


@pytest.fixture(scope="module")
def lists(split):
    return RerankLists.from_split(split, "validation", seed=0)


def test_every_rated_item_is_in_exactly_one_list_with_its_label(split, lists):
    samples = split.samples["validation"]
    per_user = samples.groupby("user_id", sort=False)
    assert len(lists) == sum(-(-len(rows) // 4) for _, rows in per_user)
    assert lists.item_ids.shape == lists.labels.shape == (len(lists), 10)
    for index in np.random.default_rng(0).choice(len(lists), 200, replace=False):
        rows = per_user.get_group(lists.user_ids[index])
        chunk = rows.iloc[lists.positions[index] : lists.positions[index] + 4]
        labels = dict(zip(lists.item_ids[index], lists.labels[index]))
        for item, label in zip(chunk.item_id, chunk.label):
            assert labels[item] == label
        # The padding is labelled 0, so the list's positives are the chunk's.
        assert lists.labels[index].sum() == chunk.label.sum()


def test_lists_are_shuffled_and_seeded(split, lists):
    again = RerankLists.from_split(split, "validation", seed=0)
    other = RerankLists.from_split(split, "validation", seed=1)
    np.testing.assert_array_equal(again.item_ids, lists.item_ids)
    assert not np.array_equal(other.item_ids, lists.item_ids)
    # No initial ranker: a chunk's first rated item lands at every position.
    first_rated = [
        list(lists.item_ids[i]).index(
            split.samples["validation"]
            .groupby("user_id", sort=False)
            .get_group(lists.user_ids[i])
            .item_id.iloc[lists.positions[i]]
        )
        for i in range(300)
    ]
    assert set(first_rated) == set(range(10))


def test_bad_sizes_and_split_names_are_errors(split):
    with pytest.raises(ValueError, match="Unknown split 'tests'"):
        RerankLists.from_split(split, "tests", seed=0)
    with pytest.raises(ValueError, match="items_from_history must be in"):
        RerankLists.from_split(split, "test", seed=0, items_from_history=11)
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        RerankLists.from_split(split, "test", seed=0, catalogue=["1", "2"])
