import numpy as np

from marc_keras.ranking.ctr_metrics import auc
from marc_keras.ranking.ranking_features import RankingFeatures
from marc_keras.ranking.two_feature_logistic import CLICK_RATE_PRIOR_COUNT, TwoFeatureLogistic


def _features(size=4000, seed=0):
    """Items 1..20 clicked with probability item / 21; ratings unrelated to labels."""
    rng = np.random.default_rng(seed)
    features = RankingFeatures.__new__(RankingFeatures)
    features.item_genres = np.zeros((21, 1), "int32")
    features.inputs, features.labels = {}, {}
    for name in ("train", "validation", "test"):
        items = rng.integers(1, 21, size).astype("int32")
        ratings = rng.integers(0, 6, (size, 3)).astype("int32")
        features.inputs[name] = {"item": items, "history_ratings": ratings}
        features.labels[name] = (rng.random(size) < items / 21).astype("float32")
    return features


def test_click_rate_is_smoothed_towards_the_mean():
    features = _features(size=50)
    features.inputs["train"]["item"][:] = 1
    features.inputs["train"]["item"][:4] = 2
    features.labels["train"][:] = 0
    features.labels["train"][:4] = 1  # item 2: 4 of 4 clicked; item 1: 0 of 46
    model = TwoFeatureLogistic(features).fit(np.arange(50))
    mean = 4 / 50
    prior = CLICK_RATE_PRIOR_COUNT
    np.testing.assert_allclose(model._item_click_rate[2], (4 + prior * mean) / (4 + prior))
    np.testing.assert_allclose(model._item_click_rate[1], (0 + prior * mean) / (46 + prior))
    np.testing.assert_allclose(model._item_click_rate[3], mean)  # unseen item: the mean


def test_fit_is_the_maximum_likelihood_and_ranks_by_click_rate():
    features = _features()
    rows = np.arange(len(features.labels["train"]))
    model = TwoFeatureLogistic(features).fit(rows)
    # At the maximum of the log-likelihood its gradient X^T (p - y) vanishes.
    columns = model._columns("train")
    design = np.column_stack([np.ones(len(columns)), columns])
    probabilities = 1 / (1 + np.exp(-model.scores("train")))
    gradient = design.T @ (probabilities - features.labels["train"])
    np.testing.assert_allclose(gradient, 0, atol=1e-6)
    assert model.weights[1] > 0  # the click rate raises the score
    # Clicks follow item / 21 here, so the ideal ranking's AUC bounds the model's.
    ideal = auc(features.labels["test"], features.inputs["test"]["item"])
    assert abs(auc(features.labels["test"], model.scores("test")) - ideal) < 0.01
