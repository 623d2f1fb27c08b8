"""MARC's training objectives by name: how pairs are scored and trained (arXiv 2604.18146).

"bce" is MARC itself (Sec. 3); the others are the baselines and ablations
(Sec. 4.1 and 4.3) that `marc_keras.baselines.method_registry` names. Each is
one `TrainingObjective` in `OBJECTIVES`; `resolve_objective` looks one up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from keras import ops

from marc_keras.losses.pair_losses import (
    angle_loss,
    cosent_loss,
    cosine_embedding_loss,
    in_batch_contrastive_loss,
)

# What turns a compressed pair (c_u, c_i) into its click logit: MARC's
# matching network, a learned scale * cosine + bias (`CosineScorer`), or the
# plain cosine, which trains nothing and is the score the AUC measures.
HEADS = ("matching", "cosine_scorer", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainingObjective:
    """One way to score and train (user, item) pairs (MARC, Sec. 3, 4.1 and 4.3).

    Args:
        name: the objective's name, as `MARC(objective=...)` and the run
            config spell it.
        description: one line for docs and tables.
        head: which of `HEADS` scores the pair; only "matching" trains the
            matching network.
        loss: `loss(logits, user, item, labels, sample_weight)` -> float32
            scalar, where `logits` is a list of (B, 1) click logits (the
            head's, then one per Matryoshka prefix), `user` and `item` are the
            (B, k) compressed vectors, `labels` (B, 1) float32 clicks and
            `sample_weight` (B,) or `None`.
        metric: the name the loss is logged under (history.csv column,
            metrics.json key).
        nested_prefixes: whether each nested prefix of the compressed vectors
            gets its own matching network (Matryoshka).

    Returns:
        A frozen record; `loss` is called on a batch as described above.

    Example:
    >>> objective = resolve_objective("contrastive")
    >>> objective.head, objective.metric
    ('cosine', 'contrastive')
    >>> objective.loss([logit], user, item, labels, None)  # in-batch InfoNCE
    """

    name: str
    description: str
    head: str
    loss: Callable
    metric: str
    nested_prefixes: bool = False

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}; got '{self.head}'.")


def _weighted_cross_entropy(logits, labels, sample_weight):
    per_sample = ops.binary_crossentropy(labels, ops.cast(logits, "float32"), from_logits=True)[
        :, 0
    ]
    if sample_weight is None:
        return ops.mean(per_sample)
    weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.sum(per_sample * weights) / ops.maximum(ops.sum(weights), 1e-12)


def _click_cross_entropy(logits, user, item, labels, sample_weight):
    # Matryoshka: every nested prefix must predict clicks on its own.
    return ops.mean(
        ops.stack([_weighted_cross_entropy(logit, labels, sample_weight) for logit in logits])
    )


def _on_pairs(pair_loss):
    """Adapts a `pair_losses` function of (user, item, clicks) to `TrainingObjective.loss`."""

    def loss(logits, user, item, labels, sample_weight):
        # These losses compare pairs across the batch (ranking, in-batch
        # softmax), where a per-pair weight has no single place to go.
        return pair_loss(user, item, labels[:, 0])

    return loss


def _angle_optimized_loss(user, item, clicks):
    return cosent_loss(user, item, clicks) + angle_loss(user, item, clicks)


OBJECTIVES = {
    objective.name: objective
    for objective in (
        TrainingObjective(
            "bce",
            "matching network logit, binary cross-entropy (MARC)",
            "matching",
            _click_cross_entropy,
            "bce",
        ),
        TrainingObjective(
            "cosine_bce",
            "learned scale * cosine of the pair, binary cross-entropy (no matching network)",
            "cosine_scorer",
            _click_cross_entropy,
            "bce",
        ),
        TrainingObjective(
            "cosine",
            "cosine embedding loss on the pair (MARC-CS)",
            "cosine",
            _on_pairs(cosine_embedding_loss),
            "cosine",
        ),
        TrainingObjective(
            "contrastive",
            "in-batch contrastive loss on clicked pairs (LARR)",
            "cosine",
            _on_pairs(in_batch_contrastive_loss),
            "contrastive",
        ),
        TrainingObjective(
            "aoe",
            "CoSENT + angle ranking losses (ESE's AoE)",
            "cosine",
            _on_pairs(_angle_optimized_loss),
            "aoe",
        ),
        TrainingObjective(
            "mrl",
            "binary cross-entropy of matching networks on nested prefixes (Matryoshka)",
            "matching",
            _click_cross_entropy,
            "bce",
            nested_prefixes=True,
        ),
    )
}


def resolve_objective(name: str) -> TrainingObjective:
    """The `TrainingObjective` called `name`.

    Args:
        name: one of `OBJECTIVES`.

    Returns:
        The registered `TrainingObjective`.

    Raises:
        ValueError: `name` is not registered; the message lists the valid names.

    Example:
    >>> resolve_objective("mrl").nested_prefixes
    True
    """
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got '{name}'.")
    return OBJECTIVES[name]
