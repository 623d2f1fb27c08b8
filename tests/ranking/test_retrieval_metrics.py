import math

import numpy as np
import pytest

from marc_keras.ranking.retrieval_metrics import retrieval_metrics


def test_a_hand_computed_case():
    # User 0: candidates ranked c2 (0.9), c0 (0.8), c3 (0.5, excluded), c1 (0.3), c4 (0.1);
    # positives c0 and c4: ranks 2 and 4 once c3 leaves the list.
    # User 1: one positive, ranked first.
    scores = [[0.8, 0.3, 0.9, 0.5, 0.1], [0.1, 0.9, 0.2, 0.3, 0.4]]
    positives = [[True, False, False, False, True], [False, True, False, False, False]]
    excluded = [[False, False, False, True, False], [False] * 5]
    found = retrieval_metrics(scores, positives, excluded, cutoffs=(1, 2, 4))
    assert found["users"] == 2
    assert found["hr@1"] == pytest.approx((0 + 1) / 2)
    assert found["hr@2"] == pytest.approx((0.5 + 1) / 2)
    assert found["hr@4"] == pytest.approx((1 + 1) / 2)
    ideal_two = 1 + 1 / math.log2(3)
    assert found["ndcg@2"] == pytest.approx(((1 / math.log2(3)) / ideal_two + 1) / 2)
    user_zero = (1 / math.log2(3) + 1 / math.log2(5)) / ideal_two
    assert found["ndcg@4"] == pytest.approx((user_zero + 1) / 2)
    assert found["mrr"] == pytest.approx((1 / 2 + 1) / 2)


def test_users_without_positives_are_not_judged_and_bad_shapes_are_named():
    positives = [[True, False], [False, False]]
    found = retrieval_metrics([[1.0, 0.0], [0.0, 1.0]], positives, cutoffs=(1,))
    assert found["users"] == 1 and found["hr@1"] == 1.0
    with pytest.raises(ValueError, match="one shape"):
        retrieval_metrics(np.zeros((2, 3)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="both a positive and excluded"):
        retrieval_metrics([[1.0, 0.0]], [[True, False]], [[True, False]])
    with pytest.raises(ValueError, match="no user"):
        retrieval_metrics([[1.0, 0.0]], [[False, False]])


def test_ties_keep_candidate_order_and_excluded_items_never_count():
    # All scores tie: the order is the candidates' own. The excluded first
    # candidate leaves, so the positive (third) ranks second.
    found = retrieval_metrics(
        [[0.5, 0.5, 0.5]], [[False, False, True]], [[True, False, False]], cutoffs=(1, 2)
    )
    assert found["hr@1"] == 0.0 and found["hr@2"] == 1.0 and found["mrr"] == 0.5
