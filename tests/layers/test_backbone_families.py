"""The backbone families of the MARC paper (Sec. 2.2, Fig. 8), each end to end.

Each family is a tiny random checkpoint in the Hugging Face format, written by
transformers' own classes inside the test (nothing is downloaded), loaded
through `LoRABackbone.from_preset` exactly as a user's checkpoint would be,
and checked against transformers' forward, for LoRA placement and gradients,
pooling under either padding side, the frozen prefix, a `.keras` round trip,
and ONNX export and ONNX Runtime encoding.
"""

import numpy as np
import pytest
import torch

import marc_keras
import keras
from helpers import hidden_states_of_both
from marc_keras.layers.lora_backbone import TESTED_MODEL_TYPES

TEXTS = ["the action movie", "user likes drama film a stars", "a comedy"]
COMMON = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
# family -> (transformers config class, model class, config arguments, pooling)
FAMILIES = {
    "bert": ("BertConfig", "BertModel", dict(max_position_embeddings=32), "mean"),
    # TinyBERT is BERT with 4 narrow blocks (4L-312); here 4 blocks at the tiny width.
    "tinybert": (
        "BertConfig",
        "BertModel",
        dict(num_hidden_layers=4, hidden_size=12, num_attention_heads=3, intermediate_size=24),
        "cls",
    ),
    # SmolLM2 / Llama 2: tied embeddings, RMSNorm epsilon 1e-5.
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(num_key_value_heads=1, rms_norm_eps=1e-5, tie_word_embeddings=True),
        "last",
    ),
    # Llama 3.1: rope scaling, as transformers 5 writes it (`rope_parameters`).
    "llama3": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            num_key_value_heads=1,
            rms_norm_eps=1e-5,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
        "last",
    ),
    # Qwen2 and Qwen2.5 share the architecture (biased q/k/v projections).
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=1), "mean"),
}
DECODERS = ("llama", "llama3", "qwen2")


def _write_checkpoint(directory, family, tokenizer):
    import transformers

    config_class, model_class, arguments, _ = FAMILIES[family]
    config = getattr(transformers, config_class)(
        **{**COMMON, "vocab_size": tokenizer.vocabulary_size, **arguments},
        **({} if family.endswith("bert") else {"max_position_embeddings": 64}),
    )
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    model.save_pretrained(directory)
    (directory / "tokenizer.json").write_text(tokenizer.to_json(), "utf-8")
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (checkpoint directory, the transformers model), written once."""
    tokenizer = marc_keras.TextTokenizer.from_vocabulary(
        ("the", "a", "movie", "user", "likes", "film", "action", "comedy", "drama", "stars"),
        max_length=16,
    )
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        family: (root / family, _write_checkpoint(root / family, family, tokenizer))
        for family in FAMILIES
    }


def _backbone(checkpoints, family, **kwargs):
    keras.utils.set_random_seed(0)
    layer = marc_keras.LoRABackbone.from_preset(
        checkpoints[family][0], lora_rank=2, pooling=FAMILIES[family][3], max_length=16, **kwargs
    )
    # Fresh LoRA has B = 0 (a no-op); a trained adapter is not.
    rng = np.random.default_rng(3)
    for variable in layer.trainable_weights:
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype("float32"))
    return layer


def _encoder(checkpoints, family, frozen=True):
    encoder = marc_keras.MARCEncoder(
        _backbone(checkpoints, family), marc_keras.CompressionNetwork((16,), 8, name="compression")
    )
    if frozen:
        encoder.trainable = False
    return encoder


def _vectors(layer, tokens):
    return keras.ops.convert_to_numpy(layer(tokens, training=False))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_hidden_state_matches_transformers(checkpoints, family):
    directory, reference = checkpoints[family]
    layer = marc_keras.LoRABackbone.from_preset(directory, lora_rank=2, max_length=16)
    tokens = layer.tokenize(TEXTS)
    ours, theirs = hidden_states_of_both(layer, reference, tokens)
    assert len(ours) == len(theirs) == layer.num_layers + 1
    mask = tokens["padding_mask"].astype(bool)
    for index, (mine, hf) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(
            mine[mask],
            hf[mask],
            atol=1e-4,
            err_msg=f"{family}: hidden state {index}",
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_sits_on_query_and_value_and_gradients_reach_exactly_lora_and_heads(
    checkpoints, family
):
    encoder = _encoder(checkpoints, family, frozen=False)
    backbone = encoder.backbone
    lora = {v.path for v in backbone.trainable_weights}
    projections = {path.rsplit("/", 2)[-2] for path in lora}
    assert projections == {"query", "value"}
    assert len(lora) == 4 * backbone.num_layers  # (A, B) x (query, value) per block
    outputs = encoder(backbone.tokenize(TEXTS), training=True)
    torch.sum(outputs["compressed"] ** 2).backward()
    with_gradient = {v.path for v in encoder.weights if v.value.grad is not None}
    assert with_gradient == {v.path for v in encoder.trainable_weights}
    assert lora < with_gradient and any("compression" in path for path in with_gradient - lora)


@pytest.mark.parametrize("family", FAMILIES)
def test_pooling_does_not_depend_on_the_padding(checkpoints, family):
    layer = _backbone(checkpoints, family)
    tokens = layer.tokenize(TEXTS)
    alone = np.concatenate([_vectors(layer, layer.tokenize([text])) for text in TEXTS])
    np.testing.assert_allclose(_vectors(layer, tokens), alone, atol=1e-5)
    if family not in DECODERS:
        return  # BERT's absolute positions need right padding, as its tokenizers pad.
    # Rotary positions are relative: a left-padded batch gives the same vectors.
    lengths = tokens["padding_mask"].sum(axis=1)
    left = {key: np.zeros_like(value) for key, value in tokens.items()}
    for row, length in enumerate(lengths):
        for key, value in tokens.items():
            left[key][row, value.shape[1] - length :] = value[row, :length]
    np.testing.assert_allclose(_vectors(layer, left), alone, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_prefix_gives_the_same_vectors_or_a_clear_error(checkpoints, family):
    if family in DECODERS:
        with pytest.raises(ValueError, match="final norm.*Use an encoder backbone"):
            _backbone(checkpoints, family, frozen_prefix_layers=1)
        return
    layer = _backbone(checkpoints, family, frozen_prefix_layers=1)
    tokens = layer.tokenize(TEXTS)
    states = layer.prefix_states(tokens)
    np.testing.assert_allclose(
        _vectors(layer, {"prefix_states": states, "padding_mask": tokens["padding_mask"]}),
        _vectors(layer, tokens),
        atol=1e-5,
    )
    assert all("transformer_layer_0" not in v.path for v in layer.trainable_weights)


@pytest.mark.parametrize("family", FAMILIES)
def test_keras_round_trip_keeps_the_vectors(checkpoints, family, tmp_path):
    encoder = _encoder(checkpoints, family)
    tokens = encoder.backbone.tokenize(TEXTS)
    path = tmp_path / f"{family}.keras"
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    for name, values in encoder.predict_on_batch(tokens).items():
        np.testing.assert_allclose(loaded.predict_on_batch(tokens)[name], values, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_passes_its_gate_and_runtime_encoding_equals_keras(
    checkpoints, family, tmp_path
):
    from marc_keras.export.onnx_encoder import OnnxEncoder
    from marc_keras.export.onnx_exporter import OnnxExporter

    encoder = _encoder(checkpoints, family)
    manifest = OnnxExporter(encoder, source={"family": family}).export(tmp_path / "bundle")
    assert max(manifest.verification["max_abs_error"].values()) <= 1e-4
    texts = TEXTS + ["film", "the user likes the action comedy and the drama stars a lot"]
    expected = encoder.predict_on_batch(encoder.backbone.tokenize(texts))
    actual = OnnxEncoder(tmp_path / "bundle", provider="cpu", threads=1).encode(texts)
    for name in ("compressed", "original"):
        np.testing.assert_allclose(actual[name], np.asarray(expected[name]), atol=1e-4)


@pytest.mark.parametrize("model_type", ["phi", "phi3"])
def test_families_keras_hub_cannot_convert_name_the_tested_ones(tmp_path, model_type):
    import transformers

    config = getattr(transformers, f"{model_type.capitalize()}Config")(
        vocab_size=32, max_position_embeddings=32, pad_token_id=0, **COMMON
    )
    getattr(transformers, f"{model_type.capitalize()}ForCausalLM")(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"model type '{model_type}'") as caught:
        marc_keras.LoRABackbone.from_preset(tmp_path)
    assert all(name in str(caught.value) for name in TESTED_MODEL_TYPES)
