"""Losses on (user, item, click) pairs used by the compression baselines (MARC, Sec. 4.1).

All take paired user and item vectors (B, k) and 0/1 labels (B,) and return
a float32 scalar. They are the training objectives of the fine-tuned
baselines and ablations that `marc_keras.baselines.method_registry` names:

- `cosine_embedding_loss`: MARC-CS (cosine loss instead of cross-entropy);
- `in_batch_contrastive_loss`: LARR (in-batch contrastive on clicked pairs);
- `cosent_loss` + `angle_loss`: the AoE objective of ESE.
"""

from __future__ import annotations

from keras import ops

# Large enough to remove a pair from a logsumexp, small enough for float32.
_EXCLUDED = 1e12


def _prepare(user, item, labels):
    user = ops.cast(user, "float32")
    item = ops.cast(item, "float32")
    labels = ops.reshape(ops.cast(labels, "float32"), (-1,))
    return user, item, labels


def cosine_similarity(user, item):
    """Row-wise cosine similarity of two (B, k) batches -> (B,)."""
    user = ops.cast(user, "float32")
    item = ops.cast(item, "float32")
    norms = ops.sqrt(ops.sum(ops.square(user), axis=1) * ops.sum(ops.square(item), axis=1))
    return ops.sum(user * item, axis=1) / ops.maximum(norms, 1e-12)


def cosine_embedding_loss(user, item, labels, margin: float = 0.0):
    """Pulls clicked pairs to cosine 1, pushes the others below `margin`.

    loss = mean(y (1 - cos) + (1 - y) max(0, cos - margin)).

    Args:
        user: (B, k) vectors.
        item: (B, k) vectors.
        labels: (B,) 0/1 clicks.
        margin: cosine above which a non-clicked pair is penalised.

    Returns:
        A float32 scalar.

    Example:
    >>> cosine_embedding_loss([[1.0, 0.0]], [[0.0, 1.0]], [1.0])  # cos 0 -> loss 1
    """
    user, item, labels = _prepare(user, item, labels)
    cosine = cosine_similarity(user, item)
    per_pair = labels * (1.0 - cosine) + (1.0 - labels) * ops.relu(cosine - margin)
    return ops.mean(per_pair)


def _same_rows(vectors):
    """(B, B) bool: rows i and j hold the same vector (the same text, gathered)."""
    return ops.max(ops.abs(vectors[:, None, :] - vectors[None, :, :]), axis=-1) <= 1e-6


def in_batch_contrastive_loss(user, item, labels, temperature: float = 0.1):
    """Symmetric InfoNCE over the clicked pairs of a batch (LARR).

    For each clicked pair i, its item must be the most similar to its user
    among the batch's items (and its user among the batch's users):
    -log softmax(S[i])_i and -log softmax(S[:, i])_i with
    S = normalise(user) normalise(item)^T / temperature, averaged over the
    clicked pairs. A batch without clicks gives 0.

    Candidates that are not negatives are left out of the softmax: for user
    i, another row of item i (its score equals the positive's) or an item
    user i clicked in another pair of the batch; for item i, another row of
    user i, or a user who clicked item i in another pair. Equal rows are
    found by their vectors: `PairBatches` encodes each distinct text once
    and gathers it, so the pairs of one user hold the same vector.
    User-grouped batches hold several pairs per user; without this their
    clicked items would count as each other's negatives.

    Args:
        user: (B, k) vectors.
        item: (B, k) vectors.
        labels: (B,) 0/1 clicks; only clicked pairs are positives.
        temperature: softmax temperature.

    Returns:
        A float32 scalar.

    Example:
    >>> in_batch_contrastive_loss(users, items, clicks, temperature=0.1)
    """
    user, item, labels = _prepare(user, item, labels)
    same_user, same_item = _same_rows(user), _same_rows(item)
    user = user / ops.maximum(ops.norm(user, axis=1, keepdims=True), 1e-12)
    item = item / ops.maximum(ops.norm(item, axis=1, keepdims=True), 1e-12)
    scores = ops.matmul(user, ops.transpose(item)) / temperature  # (B, B): user i, item j
    diagonal = ops.diagonal(scores)
    others = ops.logical_not(ops.cast(ops.eye(ops.shape(scores)[0]), "bool"))
    # clicked_by[i, j]: user i clicked item j in some pair of the batch.
    clicks_of_user = ops.cast(same_user, "float32") * labels[None, :]
    clicked_by = ops.matmul(clicks_of_user, ops.cast(same_item, "float32")) > 0
    # Row i: item j is no negative for user i if it is item i or user i clicked it.
    not_negative_item = others & (same_item | clicked_by)
    # Column i: user j is no negative for item i if it is user i or clicked item i.
    not_negative_user = others & (same_user | clicked_by)
    user_to_item = (
        ops.logsumexp(ops.where(not_negative_item, -_EXCLUDED, scores), axis=1) - diagonal
    )
    item_to_user = (
        ops.logsumexp(ops.where(not_negative_user, -_EXCLUDED, scores), axis=0) - diagonal
    )
    per_pair = 0.5 * (user_to_item + item_to_user)
    return ops.sum(per_pair * labels) / ops.maximum(ops.sum(labels), 1.0)


def _ranking_loss(scores, labels):
    # CoSENT form: log(1 + sum over pairs (i, j) with y_i < y_j of
    # exp(s_i - s_j)): every clicked pair should score above every other.
    differences = scores[:, None] - scores[None, :]  # (B, B)
    wrong_order = ops.cast(labels[:, None] < labels[None, :], "float32")
    differences = differences - (1.0 - wrong_order) * _EXCLUDED
    flat = ops.concatenate([ops.zeros((1,)), ops.reshape(differences, (-1,))])
    return ops.logsumexp(flat)


def cosent_loss(user, item, labels, temperature: float = 20.0):
    """CoSENT ranking loss on the pairs' cosine similarities (ESE's AoE, part 1).

    loss = log(1 + sum_{y_i < y_j} exp(t (cos_i - cos_j))).

    Args:
        user: (B, k) vectors.
        item: (B, k) vectors.
        labels: (B,) 0/1 clicks.
        temperature: t, the scale of the similarity differences.

    Returns:
        A float32 scalar (0 for a batch of one label).
    """
    user, item, labels = _prepare(user, item, labels)
    return _ranking_loss(temperature * cosine_similarity(user, item), labels)


def angle_loss(user, item, labels, temperature: float = 20.0):
    """AnglE's angle-difference ranking loss (ESE's AoE, part 2).

    Each vector is read as a complex vector (first half real, second half
    imaginary parts); the pair's score is |sum(re + im)| of
    u conj(v) / (|u| |v|), the angle difference of u and v per complex
    coordinate (as AnglE computes it), which does not saturate where cosine
    does. Scores are ranked as in `cosent_loss`.

    Args:
        user: (B, k) vectors, k even.
        item: (B, k) vectors, k even.
        labels: (B,) 0/1 clicks.
        temperature: scale of the score differences.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: k is odd.
    """
    user, item, labels = _prepare(user, item, labels)
    width = user.shape[-1]
    if width is not None and width % 2:
        raise ValueError(
            f"angle_loss reads vectors as complex halves; their width must be even, got {width}."
        )
    a, b = ops.split(user, 2, axis=1)  # u = a + b i
    c, d = ops.split(item, 2, axis=1)  # v = c + d i
    item_norm = ops.sum(c * c + d * d, axis=1, keepdims=True)
    real = (a * c + b * d) / ops.maximum(item_norm, 1e-12)
    imaginary = (b * c - a * d) / ops.maximum(item_norm, 1e-12)
    norm_ratio = ops.sqrt(ops.sum(a * a + b * b, axis=1, keepdims=True)) / ops.maximum(
        ops.sqrt(item_norm), 1e-12
    )
    real = real / ops.maximum(norm_ratio, 1e-12)
    imaginary = imaginary / ops.maximum(norm_ratio, 1e-12)
    scores = ops.abs(ops.sum(real, axis=1) + ops.sum(imaginary, axis=1))
    return _ranking_loss(temperature * scores, labels)
