import numpy as np
import pytest

from marc_keras.ranking.ctr_metrics import auc, logloss, relative_improvement


def test_auc_hand_computed_with_ties():
    # positives score 0.8 and 0.4; negatives 0.4 and 0.1.
    # pairs: (0.8>0.4) 1, (0.8>0.1) 1, (0.4=0.4) 0.5, (0.4>0.1) 1 -> 3.5 / 4
    assert auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert auc([0, 1], [0.3, 0.3]) == pytest.approx(0.5)
    assert auc([1, 0, 1, 0], [4, 3, 2, 1]) == pytest.approx(0.75)


def test_auc_matches_the_pairwise_definition_on_random_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200), 1)  # many ties
    positive, negative = scores[labels == 1], scores[labels == 0]
    pairwise = (
        (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    ).mean()
    assert auc(labels, scores) == pytest.approx(pairwise)


def test_logloss_hand_computed_and_clipped():
    expected = -(np.log(0.8) + np.log(0.6)) / 2
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(expected)
    assert np.isfinite(logloss([1, 0], [0.0, 1.0]))


def test_relative_improvement():
    assert relative_improvement(0.8011, 0.7833) == pytest.approx((0.3011 / 0.2833) - 1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        auc([2, 0], [0.2, 0.3])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        logloss([1, 0, 1], [0.2, 0.3])
