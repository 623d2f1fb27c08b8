"""MARC heads trained K-fold over training users: no user vector fitted to its own clicks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import keras
from marc_keras.utils.backend_guard import set_random_seed
import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from marc_keras.models.marc import MARC

HOLDOUTS = ("all-folds", "fold-average")


@dataclasses.dataclass
class CrossFitResult:
    """What `CrossFittedHeads.fit_transform` made.

    Attributes:
        users: (user ids, (N_u, k) compressed vectors).
        items: (item ids, (N_i, k) compressed vectors), from the all-folds model.
        encoded_by: user id -> the fold whose model encoded that user (-1 for
            users outside the training users: the all-folds model or the
            fold average).
        trained_on: per fold, the user ids of the pairs its model trained on.
        validation_auc: per model (folds first, the all-folds model last),
            the best own validation AUC of its heads.
        model: the all-folds MARC (its heads trained on every training pair).
    """

    users: tuple[np.ndarray, np.ndarray]
    items: tuple[np.ndarray, np.ndarray]
    encoded_by: dict[str, int]
    trained_on: list[np.ndarray]
    validation_auc: list[float]
    model: MARC


class CrossFittedHeads:
    """Compressed vectors whose training users were encoded by heads that never saw them.

    MARC's heads fit each training user's vector to that user's click labels;
    a downstream ranker trained on the same users then meets vectors that
    carry fitted labels in training and not at test (a feature shift, issue
    "MARC-C must beat PCA", cause 2). Cross-fitting, as in double machine
    learning (Chernozhukov et al., 2018): training users are split into K
    folds; K heads (compression + matching networks, `MARC.fit_heads`) are
    trained on fixed backbone vectors of the pairs of K-1 folds each, and
    each fold's users are encoded by the model that left them out. One more
    model trained on every fold encodes the items (one vector each) and the
    validation and test users (`holdout="all-folds"`), or those users get
    the mean of the K fold models' vectors (`"fold-average"`).

    K models give K compressed spaces. Every model starts from the same
    initial weights and sees the pairs in the same seeded order, and each
    fold model's space is mapped onto the all-folds model's by least squares
    (with intercept) on anchors both models encode without having been
    fitted differently to them: the items and the training users of the
    fold model's own training folds. The held-out fold's users then land in
    the space the items and test users live in.

    Only the heads are cross-fitted: with a LoRA-tuned backbone as the
    vectors' source, the backbone itself was fitted on every training user.

    Args:
        build_model: callable returning a fresh, built `MARC` (its backbone
            is never run).
        folds: K >= 2, or 1 for one model on every pair (no cross-fitting:
            the plain heads, for comparison).
        epochs: at most this many epochs per model (`MARC.fit_heads`).
        batch_size: pairs per step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: seeds the fold assignment, the initial weights and the order.
        holdout: how users outside the training users are encoded, one of
            `HOLDOUTS`.
        log: callable taking one progress line.

    Example:
    >>> heads = CrossFittedHeads(lambda: MARC.from_preset(path), folds=5)
    >>> result = heads.fit_transform(users, items, train_pairs, validation_pairs,
    ...                              split.users["train"])
    >>> user_ids, user_vectors = result.users
    """

    def __init__(
        self,
        build_model: Callable[[], MARC],
        folds: int = 5,
        epochs: int = 6,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        seed: int = 0,
        holdout: str = "all-folds",
        log: Callable[[str], object] = print,
    ) -> None:
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
            raise ValueError(
                f"folds must be a whole number >= 2 (or 1 for no cross-fitting); got {folds!r}."
            )
        if holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {', '.join(HOLDOUTS)}; got {holdout!r}.")
        self.build_model = build_model
        self.folds = folds
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        self.holdout = holdout
        self.log = log

    def fold_of(self, training_users: Sequence[str]) -> dict[str, int]:
        """Each training user's fold, from a seeded permutation (sizes differ by at most one)."""
        users = sorted(set(training_users))
        if len(users) < self.folds:
            raise ValueError(
                f"{len(users)} training users cannot be split into {self.folds} folds; "
                "lower training.cross_fit_folds."
            )
        order = np.random.default_rng(self.seed).permutation(len(users))
        return {users[position]: rank % self.folds for rank, position in enumerate(order)}

    def _train(self, rows, users, items, pairs, validation):
        """One heads model trained on `pairs.iloc[rows]`; returns (model, best validation AUC)."""
        set_random_seed(self.seed)
        model = self.build_model()
        history = model.fit_heads(
            self.pair_vectors(users, items, pairs.iloc[rows]),
            pairs["label"].to_numpy("float32")[rows],
            (self.pair_vectors(users, items, validation), validation["label"].to_numpy("float32")),
            keras.optimizers.AdamW(self.learning_rate, weight_decay=self.weight_decay),
            epochs=self.epochs,
            batch_size=self.batch_size,
        )
        return model, max(float(value) for value in history.history["val_auc"])

    @staticmethod
    def pair_vectors(
        users: tuple[np.ndarray, np.ndarray],
        items: tuple[np.ndarray, np.ndarray],
        pairs: pd.DataFrame,
    ) -> dict[str, np.ndarray]:
        """MARC's inputs for `pairs` (`user_id`, `item_id`) from per-id backbone vectors.

        Returns:
            `{"user_original": (N, d), "item_original": (N, d)}`, row i for pair i.

        Raises:
            ValueError: a pair's id has no vector (the id is named).
        """
        rows = {}
        for tower, (ids, vectors) in (("user", users), ("item", items)):
            position = {key: index for index, key in enumerate(ids)}
            try:
                index = np.array([position[key] for key in pairs[f"{tower}_id"]])
            except KeyError as missing:
                raise ValueError(
                    f"pair {tower}_id {missing.args[0]!r} has no {tower} vector; "
                    f"encode every {tower} of the pairs first."
                ) from None
            rows[f"{tower}_original"] = vectors[index]
        return rows

    @staticmethod
    def compress(model: MARC, tower: str, vectors: np.ndarray) -> np.ndarray:
        """(N, d) backbone vectors -> (N, k) compressed vectors by `model`'s `tower` network."""
        compression = model.tower_compression(tower)
        return keras.ops.convert_to_numpy(compression(vectors, training=False))

    @staticmethod
    def _aligned(source_anchors, target_anchors, source):
        # Least squares map (with intercept) from one model's space to another's.
        design = np.hstack([source_anchors, np.ones((len(source_anchors), 1))])
        weights, *_ = np.linalg.lstsq(design, target_anchors, rcond=None)
        return np.hstack([source, np.ones((len(source), 1))]) @ weights

    def fit_transform(
        self,
        users: tuple[np.ndarray, np.ndarray],
        items: tuple[np.ndarray, np.ndarray],
        train_pairs: pd.DataFrame,
        validation_pairs: pd.DataFrame,
        training_users: Sequence[str],
    ) -> CrossFitResult:
        """Trains the heads and encodes every user and item.

        Args:
            users: (user ids, (N_u, d) backbone vectors) of every user.
            items: (item ids, (N_i, d) backbone vectors) of every item.
            train_pairs: `user_id`, `item_id`, `label` of the training pairs
                (their users must be training users).
            validation_pairs: the same for validation users (early stopping).
            training_users: the users whose vectors must not be fitted to
                their own clicks (the downstream ranker's training users).

        Returns:
            A `CrossFitResult`.
        """
        user_ids, user_vectors = users
        item_ids, item_vectors = items
        pair_users = train_pairs["user_id"].to_numpy()
        outside = ~np.isin(pair_users, list(training_users))
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} training pairs belong to users outside training_users "
                f"(e.g. {pair_users[outside][0]!r}); train the heads on training users' pairs only."
            )
        everything, best_auc = self._train(
            np.arange(len(train_pairs)), users, items, train_pairs, validation_pairs
        )
        self.log(f"heads on every training pair: validation AUC {best_auc:.4f}")
        everything_users = self.compress(everything, "user", user_vectors)
        # The all-folds space stays the alignment target while held-out rows are replaced.
        compressed_users = everything_users.copy()
        compressed_items = self.compress(everything, "item", item_vectors)
        encoded_by = {user: -1 for user in user_ids}
        trained_on, validation_auc = [], []
        if self.folds > 1:
            fold = self.fold_of(training_users)
            user_fold = np.array([fold.get(user, -1) for user in user_ids])
            pair_fold = np.array([fold[user] for user in pair_users])
            held_out_vectors = []
            for k in range(self.folds):
                rows = np.flatnonzero(pair_fold != k)
                model, fold_auc = self._train(rows, users, items, train_pairs, validation_pairs)
                self.log(f"heads without fold {k + 1}/{self.folds}: validation AUC {fold_auc:.4f}")
                trained_on.append(np.unique(pair_users[rows]))
                validation_auc.append(fold_auc)
                anchors = (user_fold >= 0) & (user_fold != k)
                fold_users = self.compress(model, "user", user_vectors)
                fold_items = self.compress(model, "item", item_vectors)
                aligned = self._aligned(
                    np.vstack([fold_users[anchors], fold_items]),
                    np.vstack([everything_users[anchors], compressed_items]),
                    fold_users,
                )
                held_out_vectors.append(aligned)
                for index in np.flatnonzero(user_fold == k):
                    compressed_users[index] = aligned[index]
                    encoded_by[user_ids[index]] = k
            if self.holdout == "fold-average":
                others = user_fold < 0
                compressed_users[others] = np.mean(held_out_vectors, axis=0)[others]
        validation_auc.append(best_auc)
        return CrossFitResult(
            users=(user_ids, compressed_users),
            items=(item_ids, compressed_items),
            encoded_by=encoded_by,
            trained_on=trained_on,
            validation_auc=validation_auc,
            model=everything,
        )
