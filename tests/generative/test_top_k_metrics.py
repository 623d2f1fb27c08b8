import numpy as np
import pytest

from marc_keras.generative.top_k_metrics import expand_title_groups, hit_rate_and_ndcg

# One user per case: the target at rank 1, at rank 2, at rank 3, not ranked,
# at rank 1 of a list padded with -1, and not ranked in a padded list.
RANKED = np.array(
    [[5, 7, 9], [6, 4, 9], [1, 2, 3], [4, 5, 6], [8, -1, -1], [2, -1, -1]], dtype="int64"
)
TARGETS = np.array([5, 4, 3, 0, 8, 7])


def test_hit_rate_and_ndcg_by_hand():
    metrics = hit_rate_and_ndcg(RANKED, TARGETS, ks=(1, 2, 3))
    # NDCG of a hit at 1-based rank r is 1 / log2(r + 1): 1, 1/log2(3), 1/2.
    at_two = 1.0 / np.log2(3.0)
    expected = {
        "hr@1": 2 / 6,
        "ndcg@1": 2 / 6,
        "hr@2": 3 / 6,
        "ndcg@2": (1 + at_two + 1) / 6,
        "hr@3": 4 / 6,
        "ndcg@3": (1 + at_two + 0.5 + 1) / 6,
    }
    assert list(metrics) == list(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-12), key
        assert isinstance(metrics[key], float)


def test_docstring_example():
    metrics = hit_rate_and_ndcg(np.array([[3, 1], [0, 2]]), np.array([1, 5]), ks=(1, 2))
    assert metrics["hr@1"] == 0.0 and metrics["ndcg@1"] == 0.0
    assert metrics["hr@2"] == 0.5
    assert metrics["ndcg@2"] == pytest.approx(0.5 / np.log2(3.0), rel=1e-12)


def test_bad_shapes_and_cut_offs_are_explained():
    with pytest.raises(ValueError, match="K = 4 exceeds the 3 items ranked per user"):
        hit_rate_and_ndcg(RANKED, TARGETS, ks=(1, 4))
    with pytest.raises(ValueError, match=r"got \(6, 3\) and \(5,\)"):
        hit_rate_and_ndcg(RANKED, TARGETS[:5])
    with pytest.raises(ValueError, match="must be \\(users, L\\)"):
        hit_rate_and_ndcg(RANKED[0], TARGETS[:1])
    with pytest.raises(ValueError, match="one target per user"):
        hit_rate_and_ndcg(np.zeros((0, 3), "int64"), np.zeros(0, "int64"))


def test_a_title_stands_for_every_item_that_has_it():
    # Title 1 is the title of items 1 and 4.
    group_items = [[0], [1, 4], [2], [3]]
    ranked_groups = [[1, 0, 3], [2], []]
    expanded = expand_title_groups(ranked_groups, group_items, top_k=4)
    assert expanded.dtype == np.int64
    assert expanded.tolist() == [[1, 4, 0, 3], [2, -1, -1, -1], [-1, -1, -1, -1]]
    # Cut at top_k, even inside a title's items.
    assert expand_title_groups(ranked_groups, group_items, top_k=1).tolist() == [[1], [2], [-1]]
    assert expand_title_groups([[3, 1, 2]], group_items, top_k=2).tolist() == [[3, 1]]
    assert expand_title_groups([[3, 1, 2]], group_items, top_k=3).tolist() == [[3, 1, 4]]
    # Item 4 shares the first title: it is a hit at rank 2, NDCG 1 / log2(3).
    metrics = hit_rate_and_ndcg(expanded, np.array([4, 2, 0]), ks=(1, 2))
    assert metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["hr@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 / np.log2(3.0) + 1) / 3, rel=1e-12)
