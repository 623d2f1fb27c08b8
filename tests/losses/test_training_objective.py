"""The objectives registry against numpy formulas written out independently."""

import math

import numpy as np
import pytest

from marc_keras.losses.training_objective import (
    OBJECTIVES,
    TrainingObjective,
    resolve_objective,
)

# Four hand-made pairs of width 4 (even, for AnglE's complex halves), two clicked.
USER = np.array(
    [[1.0, 0.0, 0.5, 0.0], [0.0, 2.0, 0.0, 1.0], [1.0, 1.0, -1.0, 0.0], [0.5, -0.5, 0.0, 2.0]],
    "float32",
)
ITEM = np.array(
    [[1.0, 1.0, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0], [1.0, 0.0, -1.0, 1.0], [0.0, -1.0, 0.5, 1.0]],
    "float32",
)
CLICKS = np.array([1.0, 0.0, 1.0, 0.0], "float32")
LABELS = CLICKS[:, None]  # (B, 1), as MARC passes them
LOGIT = np.array([[2.0], [-1.0], [0.5], [0.0]], "float32")
PREFIX_LOGIT = np.array([[-0.5], [1.5], [3.0], [-2.0]], "float32")


def _cross_entropy(logit, clicks, weights=None):
    probability = 1.0 / (1.0 + np.exp(-logit[:, 0].astype("float64")))
    per_pair = -(clicks * np.log(probability) + (1 - clicks) * np.log(1 - probability))
    weights = np.ones_like(per_pair) if weights is None else weights
    return (per_pair * weights).sum() / weights.sum()


def _cosines(user, item):
    user, item = user.astype("float64"), item.astype("float64")
    return (user * item).sum(1) / (np.linalg.norm(user, axis=1) * np.linalg.norm(item, axis=1))


def _ranking(scores, clicks, t):
    wrong = [
        (i, j) for i in range(len(clicks)) for j in range(len(clicks)) if clicks[i] < clicks[j]
    ]
    return math.log(1 + sum(math.exp(t * (scores[i] - scores[j])) for i, j in wrong))


def _angle_scores(user, item):
    half = user.shape[1] // 2
    scores = []
    for u, v in zip(user.astype("float64"), item.astype("float64")):
        zu, zv = u[:half] + 1j * u[half:], v[:half] + 1j * v[half:]
        difference = zu * np.conj(zv) / (np.linalg.norm(u) * np.linalg.norm(v))
        scores.append(abs(difference.real.sum() + difference.imag.sum()))
    return np.array(scores)


def _contrastive(user, item, clicks, t=0.1):
    user = user / np.linalg.norm(user, axis=1, keepdims=True)
    item = item / np.linalg.norm(item, axis=1, keepdims=True)
    scores = user.astype("float64") @ item.astype("float64").T / t
    total = 0.0
    for i in np.flatnonzero(clicks):
        row = math.log(np.exp(scores[i]).sum()) - scores[i, i]
        column = math.log(np.exp(scores[:, i]).sum()) - scores[i, i]
        total += 0.5 * (row + column)
    return total / clicks.sum()


def _loss(name, logits=(LOGIT,), sample_weight=None):
    return float(resolve_objective(name).loss(list(logits), USER, ITEM, LABELS, sample_weight))


def test_the_registry_names_each_objective_its_head_and_logged_metric():
    table = {
        name: (objective.head, objective.metric, objective.nested_prefixes)
        for name, objective in OBJECTIVES.items()
    }
    assert table == {
        "bce": ("matching", "bce", False),
        "cosine_bce": ("cosine_scorer", "bce", False),
        "cosine": ("cosine", "cosine", False),
        "contrastive": ("cosine", "contrastive", False),
        "aoe": ("cosine", "aoe", False),
        "mrl": ("matching", "bce", True),
    }
    assert all(objective.name == name for name, objective in OBJECTIVES.items())


@pytest.mark.parametrize("name", ["bce", "cosine_bce"])
def test_click_objectives_are_cross_entropy_of_the_logit(name):
    assert _loss(name) == pytest.approx(_cross_entropy(LOGIT, CLICKS), abs=1e-6)
    weights = np.array([1.0, 0.0, 2.0, 1.0], "float32")
    assert _loss(name, sample_weight=weights) == pytest.approx(
        _cross_entropy(LOGIT, CLICKS, weights), abs=1e-6
    )


def test_mrl_averages_the_cross_entropy_of_every_head():
    expected = 0.5 * (_cross_entropy(LOGIT, CLICKS) + _cross_entropy(PREFIX_LOGIT, CLICKS))
    assert _loss("mrl", (LOGIT, PREFIX_LOGIT)) == pytest.approx(expected, abs=1e-6)


def test_cosine_objective_pulls_clicks_to_one_and_pushes_the_rest_below_zero():
    cosines = _cosines(USER, ITEM)
    expected = np.mean(CLICKS * (1 - cosines) + (1 - CLICKS) * np.maximum(cosines, 0))
    assert _loss("cosine") == pytest.approx(expected, abs=1e-6)


def test_contrastive_objective_is_symmetric_infonce_over_clicked_pairs():
    assert _loss("contrastive") == pytest.approx(_contrastive(USER, ITEM, CLICKS), rel=1e-5)


def test_aoe_objective_adds_cosent_and_angle_ranking():
    expected = _ranking(_cosines(USER, ITEM), CLICKS, 20.0) + _ranking(
        _angle_scores(USER, ITEM), CLICKS, 20.0
    )
    assert _loss("aoe") == pytest.approx(expected, rel=1e-4)


def test_an_unknown_name_or_head_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError) as error:
        resolve_objective("mse")
    assert str(error.value) == (
        "objective must be one of bce, cosine_bce, cosine, contrastive, aoe, mrl; got 'mse'."
    )
    with pytest.raises(ValueError, match="head must be one of matching, cosine_scorer, cosine"):
        TrainingObjective("x", "x", "dot", OBJECTIVES["bce"].loss, "x")
