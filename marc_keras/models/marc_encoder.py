"""The frozen MARC encoder: texts -> compressed and original vectors (Sec. 3.4)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from marc_keras.layers.compression_network import CompressionNetwork
from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.utils.backend_guard import serialize_keras_object
from marc_keras.utils.length_batches import encode_in_length_order
from marc_keras.utils.line_progress import count_progress, progress_is_interactive


@keras.saving.register_keras_serializable(package="marc_keras")
class MARCEncoder(keras.Model):
    """Backbone plus compression network, emitting MARC-C and MARC-O vectors.

    After training, MARC's representation module and compression network are
    used alone: `original` is the pooled backbone output r (MARC-O, d-dim),
    `compressed` is C(r) (MARC-C, 128-d by default). Both are static features
    for downstream rankers.

    Args:
        backbone: a `LoRABackbone`.
        compression: the `CompressionNetwork` of this tower, or `None` for an
            encoder of the pooled backbone output only (`original`), such as
            L2D's prompt encoder (a decoder with "last" pooling).
        **kwargs: base model arguments.

    Returns:
        Called on `{"token_ids", "padding_mask"}` (B, T) int arrays, returns
        `{"compressed": (B, k), "original": (B, d)}`.

    Example:
    >>> encoder = marc.encoder()
    >>> vectors = encoder.encode(["Heat (1995). Genres: Action, Crime."])
    >>> vectors["compressed"].shape, vectors["original"].shape
    ((1, 128), (1, 384))
    """

    def __init__(
        self,
        backbone: LoRABackbone | dict,
        compression: CompressionNetwork | dict | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(compression, dict):
            compression = keras.saving.deserialize_keras_object(compression)
        self.backbone = backbone
        self.compression = compression
        if compression is not None and not compression.built:
            compression.build((None, backbone.hidden_dim))
        self.built = True

    @property
    def output_dims(self) -> dict[str, int]:
        if self.compression is None:
            return {"original": self.backbone.hidden_dim}
        return {"compressed": self.compression.output_dim, "original": self.backbone.hidden_dim}

    def call(self, inputs, training=None):
        original = self.backbone(inputs, training=training)  # (B, d)
        if self.compression is None:
            return {"original": original}
        return {"compressed": self.compression(original, training=training), "original": original}

    def encode(
        self, texts: Iterable[str], batch_size: int = 64, verbose: bool | int = False
    ) -> dict[str, np.ndarray]:
        """Encodes texts in batches of similar length, in the input order.

        Texts are tokenized once, sorted by token count and batched, so that
        each batch pads little (padding is compute thrown away); rows come
        back in input order.

        Args:
            texts: a sequence of strings.
            batch_size: texts per forward pass.
            verbose: show progress (a bar on a terminal, plain lines otherwise).

        Returns:
            A dict of float32 numpy arrays `compressed` (N, k) and
            `original` (N, d), row i for `texts[i]`.
        """
        texts = list(texts)
        if not texts:
            return {name: np.zeros((0, dim), "float32") for name, dim in self.output_dims.items()}
        tokens = self.backbone.tokenize(texts)  # (N, longest): validates every text once
        on_batch = None
        if verbose and progress_is_interactive():
            on_batch = keras.utils.Progbar(len(texts), unit_name="text").add
        elif verbose:
            on_batch = count_progress(len(texts), "texts encoded")
        return encode_in_length_order(
            tokens,
            self.output_dims,
            self.predict_on_batch,
            batch_size=batch_size,
            on_batch=on_batch,
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "backbone": serialize_keras_object(self.backbone),
            "compression": None
            if self.compression is None
            else serialize_keras_object(self.compression),
        }

    @classmethod
    def copy_of(
        cls, backbone: LoRABackbone, compression: CompressionNetwork, **kwargs: Any
    ) -> MARCEncoder:
        """A frozen encoder holding copies of `backbone` and `compression`.

        Copies, so that freezing the encoder (or fine-tuning it downstream)
        leaves the model it came from untouched.
        """
        backbone_copy = LoRABackbone.from_config(backbone.get_config())
        backbone_copy.tokenizer = backbone.tokenizer
        backbone_copy.set_weights(backbone.get_weights())
        compression_copy = CompressionNetwork.from_config(compression.get_config())
        compression_copy.build((None, backbone.hidden_dim))
        compression_copy.set_weights(compression.get_weights())
        encoder = cls(backbone_copy, compression_copy, **kwargs)
        encoder.trainable = False
        return encoder
