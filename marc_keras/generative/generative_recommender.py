"""A causal LM fine-tuned with LoRA to write the next item's title (BIGRec; L2D Sec. 3.1)."""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
import torch
from keras import ops

from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.utils.backend_guard import serialize_keras_object
from marc_keras.utils.length_batches import encode_in_length_order

TRAINING_INPUTS = ("token_ids", "padding_mask", "target_positions")


@keras.saving.register_keras_serializable(package="marc_keras")
class GenerativeRecommender(keras.Model):
    """Next-title generation on a keras-hub causal LM, trained with `model.fit`.

    The LM reads a BIGRec prompt (the user's history titles) followed by the
    next item's title and learns to write the title: cross-entropy on the
    title tokens only, LoRA on the attention query/value projections, every
    other weight frozen. Logits are computed only at the positions that
    predict a title token: the LM head (vocabulary x d) costs as much per
    position as a fifth of SmolLM2, and prompts are ten times longer than
    titles.

    L2D reads the same model differently: `prompt_states` is the final
    hidden state (after the final norm) at the last prompt token, the
    position that predicts the first title token (L2D Sec. 3.2).

    Args:
        backbone: a `LoRABackbone` over a keras-hub causal LM backbone
            (Llama, Qwen, Gemma, ... with `token_embedding` able to reverse),
            with pooling "last".
        **kwargs: base model arguments.

    Returns:
        Called on `token_ids`, `padding_mask` (B, T) and `target_positions`
        (B, S), returns logits (B, S, vocabulary) of the token after each
        target position. `fit` takes `y = target_ids` (B, S) and
        `sample_weight = target_mask` (B, S); the loss is the mean
        cross-entropy over real title tokens.

    Example:
    >>> model = GenerativeRecommender.from_preset("checkpoints/smollm2-135m", lora_rank=8)
    >>> arrays = prompts.training_arrays(histories, targets)
    >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    >>> model.fit({k: arrays[k] for k in TRAINING_INPUTS}, arrays["target_ids"],
    ...           sample_weight=arrays["target_mask"])
    """

    def __init__(self, backbone: LoRABackbone | dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if backbone.pooling.mode != "last":
            raise ValueError(
                f"GenerativeRecommender reads the last prompt token; build its LoRABackbone "
                f"with pooling='last', not '{backbone.pooling.mode}'."
            )
        if not hasattr(backbone.backbone, "token_embedding") or not hasattr(
            backbone.backbone, "layer_norm"
        ):
            raise ValueError(
                f"{type(backbone.backbone).__name__} is not a keras-hub causal LM backbone "
                "(it needs token_embedding and a final layer_norm); use a decoder checkpoint "
                "such as SmolLM2 (Llama)."
            )
        self.backbone = backbone
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    @classmethod
    def from_preset(
        cls,
        path: str | os.PathLike,
        lora_rank: int = 8,
        lora_alpha: float | None = None,
        max_length: int = 512,
        **kwargs: Any,
    ) -> GenerativeRecommender:
        """Loads a causal LM checkpoint directory (keras-hub preset or Hugging Face).

        Args:
            path: the checkpoint directory (nothing is downloaded).
            lora_rank: LoRA rank.
            lora_alpha: LoRA scale numerator (`None`: equal to the rank).
            max_length: the most tokens of prompt plus title.
            **kwargs: base model arguments.
        """
        backbone = LoRABackbone.from_preset(
            path, lora_rank=lora_rank, lora_alpha=lora_alpha, pooling="last", max_length=max_length
        )
        return cls(backbone, **kwargs)

    def merged(self) -> GenerativeRecommender:
        """A frozen copy with LoRA merged into the kernels: the same outputs, faster to run.

        Decoding calls every block once per generated token; unmerged, each
        call rebuilds the query/value kernels from their LoRA factors.
        """
        model = GenerativeRecommender(self.backbone.merged(), name=f"{self.name}_merged")
        model.trainable = False
        return model

    @property
    def lm(self) -> keras.Model:
        """The keras-hub backbone itself (blocks, final norm, tied embedding)."""
        return self.backbone.backbone

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def call(self, inputs, training=None):
        hidden = self.lm(
            {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]},
            training=training,
        )  # (B, T, d), after the final norm
        positions = ops.cast(inputs["target_positions"], "int32")[:, :, None]
        states = ops.take_along_axis(hidden, positions, axis=1)  # (B, S, d)
        return self.lm.token_embedding(states, reverse=True)  # (B, S, V)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True)
        weights = (
            ops.ones_like(losses) if sample_weight is None else ops.cast(sample_weight, "float32")
        )
        loss = ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1.0)
        self.loss_tracker.update_state(loss)
        return loss

    @property
    def metrics(self):
        return [self.loss_tracker]

    def prompt_states(
        self, tokens: dict[str, np.ndarray], batch_size: int = 16, on_batch=None
    ) -> np.ndarray:
        """L2D's user vector: the final hidden state at each prompt's last token.

        Args:
            tokens: right-padded `token_ids`, `padding_mask` (N, T).
            batch_size: prompts per forward pass (in length order).
            on_batch: optional callable taking the number of rows just done.

        Returns:
            float32 (N, d).
        """

        def run(batch):
            with torch.no_grad():
                return {"state": ops.convert_to_numpy(self.backbone(batch, training=False))}

        return encode_in_length_order(
            tokens, {"state": self.backbone.hidden_dim}, run, batch_size, on_batch=on_batch
        )["state"]

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone": serialize_keras_object(self.backbone)}
