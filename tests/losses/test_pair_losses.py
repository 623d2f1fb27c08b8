import math

import numpy as np
import pytest

from marc_keras.losses.pair_losses import (
    angle_loss,
    cosent_loss,
    cosine_embedding_loss,
    cosine_similarity,
    in_batch_contrastive_loss,
)

USER = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
ITEM = np.array([[1.0, 1.0], [3.0, 0.0]], "float32")
# cos(u0, i0) = 1 / sqrt(2), cos(u1, i1) = 0


def test_cosine_similarity_by_hand():
    np.testing.assert_allclose(
        np.asarray(cosine_similarity(USER, ITEM)), [1 / math.sqrt(2), 0.0], atol=1e-6
    )


def test_cosine_embedding_loss_by_hand():
    # clicked pair 0: 1 - 0.7071; unclicked pair 1: max(0, 0 - 0) = 0 -> mean 0.1464
    got = float(cosine_embedding_loss(USER, ITEM, [1.0, 0.0]))
    assert got == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    # with margin -0.5 the unclicked pair at cosine 0 costs 0.5
    got = float(cosine_embedding_loss(USER, ITEM, [1.0, 0.0], margin=-0.5))
    assert got == pytest.approx((1 - 1 / math.sqrt(2) + 0.5) / 2, abs=1e-6)


def test_in_batch_contrastive_loss_by_hand():
    # S = cos matrix / t: S00 = .7071, S01 = 1, S10 = .7071, S11 = 0 (t = 1).
    s = np.array([[1 / math.sqrt(2), 1.0], [1 / math.sqrt(2), 0.0]])
    row = np.log(np.exp(s[0]).sum()) - s[0, 0]
    column = np.log(np.exp(s[:, 0]).sum()) - s[0, 0]
    expected = 0.5 * (row + column)  # only pair 0 is clicked
    got = float(in_batch_contrastive_loss(USER, ITEM, [1.0, 0.0], temperature=1.0))
    assert got == pytest.approx(expected, abs=1e-5)
    assert float(in_batch_contrastive_loss(USER, ITEM, [0.0, 0.0])) == 0.0


def test_in_batch_contrastive_loss_leaves_out_what_is_no_negative():
    # Pairs 0-2 share user a (its rows gathered from one encoding); pair 3 is
    # user b and shares item x with pair 0. Clicks: 0, 1 and 3.
    a, b = [1.0, 0.0, 0.5], [0.0, 1.0, 0.2]
    x, y, z = [1.0, 0.2, 0.0], [0.3, 1.0, 0.1], [0.1, 0.1, 1.0]
    user = np.array([a, a, a, b], "float32")
    item = np.array([x, y, z, x], "float32")
    clicks = np.array([1.0, 1.0, 0.0, 1.0])
    unit = lambda rows: rows / np.linalg.norm(rows, axis=1, keepdims=True)  # noqa: E731
    s = unit(user.astype("float64")) @ unit(item.astype("float64")).T / 0.5

    def term(scores, keep, i):
        return np.log(np.exp(scores[keep]).sum()) - scores[i]

    # User a at pair 0: item y (pair 1) is a's click, item x at pair 3 is the
    # positive itself; negatives: z only. Item x at pair 0: user a at 1, 2 is the
    # same user, user b clicked x too; no negative is left.
    pair0 = 0.5 * (term(s[0], [0, 2], 0) + term(s[:, 0], [0], 0))
    # User a at pair 1: x (clicked by a at pair 0, and at pair 3) is not a
    # negative; z is. Item y: users at 0, 2 are a itself; b is a negative.
    pair1 = 0.5 * (term(s[1], [1, 2], 1) + term(s[:, 1], [1, 3], 1))
    # User b at pair 3: item x at pair 0 is the same item; y and z are negatives.
    # Item x at pair 3: user a clicked x (pair 0), so only b itself.
    pair3 = 0.5 * (term(s[3], [1, 2, 3], 3) + term(s[:, 3], [3], 3))
    got = float(in_batch_contrastive_loss(user, item, clicks, temperature=0.5))
    assert got == pytest.approx((pair0 + pair1 + pair3) / 3, abs=1e-5)


def test_cosent_loss_by_hand():
    # one wrong-order pair (i=1 unclicked, j=0 clicked): log(1 + exp(t (cos1 - cos0)))
    t = 2.0
    expected = math.log1p(math.exp(t * (0.0 - 1 / math.sqrt(2))))
    assert float(cosent_loss(USER, ITEM, [1.0, 0.0], temperature=t)) == pytest.approx(
        expected, abs=1e-6
    )
    # every label equal: no pair to rank, log(1) = 0
    assert float(cosent_loss(USER, ITEM, [1.0, 1.0])) == pytest.approx(0.0, abs=1e-7)


def _angle_score(u, v):
    # AnglE: u, v as complex vectors (first half real, second half imaginary);
    # u conj(v) / (|u| |v|) is the angle difference per complex coordinate.
    half = len(u) // 2
    zu = u[:half] + 1j * u[half:]
    zv = v[:half] + 1j * v[half:]
    difference = zu * np.conj(zv) / (np.linalg.norm(u) * np.linalg.norm(v))
    return abs(difference.real.sum() + difference.imag.sum())


def test_angle_loss_against_complex_arithmetic():
    rng = np.random.default_rng(0)
    user = rng.normal(size=(3, 4)).astype("float32")
    item = rng.normal(size=(3, 4)).astype("float32")
    labels = np.array([1.0, 0.0, 1.0])
    scores = np.array(
        [_angle_score(u, v) for u, v in zip(user.astype("float64"), item.astype("float64"))]
    )
    t = 0.5
    wrong = [(i, j) for i in range(3) for j in range(3) if labels[i] < labels[j]]
    expected = math.log(1 + sum(math.exp(t * (scores[i] - scores[j])) for i, j in wrong))
    assert float(angle_loss(user, item, labels, temperature=t)) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="width must be even"):
        angle_loss(user[:, :3], item[:, :3], labels)
