import json

import numpy as np
import pytest
import torch
from helpers import TINY_WORDS, hidden_states_of_both, run_layer_test, tiny_hub_backbone

import marc_keras
import keras
import keras_hub


def test_only_lora_kernels_are_trainable_biases_included(make_tiny_backbone):
    layer = make_tiny_backbone(lora_rank=2)
    names = {v.name for v in layer.trainable_weights}
    assert names == {"lora_kernel_a", "lora_kernel_b"}
    # query and value of 2 blocks, two factors each
    assert len(layer.trainable_weights) == 8
    frozen_biases = [
        v for v in layer.non_trainable_weights if v.path.endswith(("query/bias", "value/bias"))
    ]
    assert len(frozen_biases) == 4


def test_rank_zero_freezes_everything(make_tiny_backbone):
    layer = make_tiny_backbone(lora_rank=0)
    assert layer.trainable_weights == []
    with pytest.raises(ValueError, match="frozen"):
        layer.save_lora_weights("x.lora.h5")


def test_all_layers_are_pooled_and_the_last_is_the_output(make_tiny_backbone, tiny_tokenizer):
    for architecture, pooling in (("bert", "mean"), ("llama", "last")):
        layer = make_tiny_backbone(architecture=architecture, pooling=pooling)
        inputs = layer.tokenize(["the action movie", "user likes drama film a"])
        out = layer(inputs, return_all_layers=True)
        assert tuple(out["layers"].shape) == (2, 3, 16)
        pooled = keras.ops.convert_to_numpy(layer(inputs))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out["layers"][:, -1]), pooled, rtol=1e-6
        )
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out["pooled"]), pooled, rtol=1e-6)


def test_padding_does_not_change_a_text_vector(make_tiny_backbone):
    layer = make_tiny_backbone(architecture="llama", pooling="last")
    alone = layer(layer.tokenize(["the comedy movie"]))
    padded = layer(layer.tokenize(["the comedy movie", "user likes the horror film a movie"]))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(alone[0]), keras.ops.convert_to_numpy(padded[0]), atol=1e-5
    )


def test_lora_weights_save_and_load_alone(make_tiny_backbone, tmp_path):
    source = make_tiny_backbone(seed=0)
    for variable in source.trainable_weights:
        variable.assign(np.random.default_rng(1).normal(size=variable.shape))
    path = tmp_path / "adapter.lora.h5"
    source.save_lora_weights(path)
    target = make_tiny_backbone(seed=0)
    inputs = target.tokenize(["the action movie"])
    assert not np.allclose(
        keras.ops.convert_to_numpy(target(inputs)), keras.ops.convert_to_numpy(source(inputs))
    )
    target.load_lora_weights(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(target(inputs)),
        keras.ops.convert_to_numpy(source(inputs)),
        rtol=1e-5,
    )
    with pytest.raises(FileNotFoundError, match="missing.lora.h5"):
        target.load_lora_weights(tmp_path / "missing.lora.h5")


def test_config_round_trip(make_tiny_backbone):
    layer = make_tiny_backbone(pooling="cls")
    clone = marc_keras.LoRABackbone.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert len(clone.trainable_weights) == len(layer.trainable_weights)


def test_tied_llama_embeddings_survive_config_and_keras_round_trips(tiny_tokenizer, tmp_path):
    # SmolLM2 ties its input and output embeddings; keras-hub's Llama config forgets that.
    hub = keras_hub.models.LlamaBackbone(
        vocabulary_size=tiny_tokenizer.vocabulary_size,
        num_layers=1,
        hidden_dim=16,
        intermediate_dim=32,
        num_query_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    layer = marc_keras.LoRABackbone(hub, tokenizer=tiny_tokenizer, lora_rank=2, pooling="last")
    clone = marc_keras.LoRABackbone.from_config(layer.get_config())
    assert clone.backbone.tie_word_embeddings
    clone.set_weights(layer.get_weights())
    compression = marc_keras.CompressionNetwork((16,), 8)
    compression.build((None, 16))
    encoder = marc_keras.MARCEncoder.copy_of(layer, compression)
    encoder.save(tmp_path / "tied.keras")
    loaded = keras.saving.load_model(tmp_path / "tied.keras")
    texts = [" ".join(TINY_WORDS[:3]), TINY_WORDS[-1]]
    np.testing.assert_allclose(
        loaded.encode(texts)["original"], encoder.encode(texts)["original"], atol=1e-6
    )


def test_missing_preset_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model.*not a directory"):
        marc_keras.LoRABackbone.from_preset(tmp_path / "no-such-model")


def test_checkpoint_keras_hub_cannot_convert(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not_a_real_architecture"}))
    with pytest.raises(ValueError, match="keras-hub could not load a backbone from"):
        marc_keras.LoRABackbone.from_preset(tmp_path)


def test_pooling_typo_is_caught_before_loading(minilm_path):
    with pytest.raises(ValueError, match="Did you mean 'last'"):
        marc_keras.LoRABackbone.from_preset(minilm_path, pooling="lats")


def test_minilm_every_layer_matches_transformers(minilm_path):
    from transformers import BertModel

    texts = [
        "Toy Story (1995). Genres: Animation, Children's, Comedy.",
        "Female, age 25-34, programmer.",
    ]
    layer = marc_keras.LoRABackbone.from_preset(minilm_path, lora_rank=4)
    inputs = layer.tokenize(texts)
    reference = BertModel.from_pretrained(str(minilm_path), local_files_only=True).eval()
    ours, theirs = hidden_states_of_both(layer, reference, inputs)
    assert len(ours) == len(theirs) == 7
    mask = inputs["padding_mask"].astype(bool)
    for index, (mine, hf) in enumerate(zip(ours, theirs)):
        a, b = mine[mask], hf[mask]
        cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() >= 0.9999, f"hidden state {index}: min cosine {cosine.min()}"
    pooled = keras.ops.convert_to_numpy(layer(inputs, return_all_layers=True)["layers"])
    hf_mean = [(h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True) for h in theirs]
    np.testing.assert_allclose(pooled, np.stack(hf_mean, axis=1), atol=5e-3)


def _perturb_lora(layer):
    # Fresh LoRA has B = 0, a no-op; copied weights must carry a real adapter.
    rng = np.random.default_rng(7)
    for variable in layer.trainable_weights:
        variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))


@pytest.mark.parametrize(
    "architecture, pooling, lora_rank, frozen_prefix_layers, trainable, frozen",
    [
        # LoRA: 2 blocks x (query, value) x 2 factors. Frozen BERT: 5 embedding
        # weights, 16 per block, 2 of the pooler; Llama: the input and output
        # embeddings, 9 per block, the final norm. A frozen prefix of 1 block
        # freezes that block's 4 LoRA factors too.
        ("bert", "mean", 2, 0, 8, 39),
        ("bert", "cls", 0, 0, 0, 39),
        ("llama", "last", 2, 0, 8, 21),
        ("bert", "mean", 2, 1, 4, 43),
    ],
)
def test_layer_checks(
    tiny_tokenizer, architecture, pooling, lora_rank, frozen_prefix_layers, trainable, frozen
):
    texts = ["the action movie", "user likes drama film a"]
    run_layer_test(
        marc_keras.LoRABackbone,
        lambda: dict(
            backbone=tiny_hub_backbone(tiny_tokenizer.vocabulary_size, architecture),
            tokenizer=tiny_tokenizer,
            lora_rank=lora_rank,
            pooling=pooling,
            frozen_prefix_layers=frozen_prefix_layers,
        ),
        tiny_tokenizer(texts),
        prepare=_perturb_lora,
        expected_output_shape=(2, 16),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=frozen,
    )


def test_all_layers_output_passes_layer_checks(tiny_tokenizer):
    run_layer_test(
        marc_keras.LoRABackbone,
        lambda: dict(
            backbone=tiny_hub_backbone(tiny_tokenizer.vocabulary_size, "llama"),
            tokenizer=tiny_tokenizer,
            lora_rank=2,
            pooling="mean",
        ),
        tiny_tokenizer(["the action movie", "a film"]),
        call_kwargs=dict(return_all_layers=True),
        prepare=_perturb_lora,
        expected_output_shape={"pooled": (2, 16), "layers": (2, 3, 16)},
    )


@pytest.mark.parametrize("architecture, pooling", [("bert", "mean"), ("llama", "last")])
def test_pooled_output_matches_numpy_pooling_of_the_backbone(tiny_tokenizer, architecture, pooling):
    hub = tiny_hub_backbone(tiny_tokenizer.vocabulary_size, architecture)
    layer = marc_keras.LoRABackbone(hub, tokenizer=tiny_tokenizer, lora_rank=2, pooling=pooling)
    _perturb_lora(layer)
    inputs = layer.tokenize(["the action movie", "user likes drama film a"])
    hub_inputs = {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
    if architecture == "bert":
        hub_inputs["segment_ids"] = np.zeros_like(inputs["token_ids"])
    outputs = hub(hub_inputs)  # BERT: a dict with the pooler's output too
    sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
    sequence = keras.ops.convert_to_numpy(sequence)
    mask = inputs["padding_mask"].astype("float32")
    if pooling == "mean":
        expected = (sequence * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    else:
        lengths = mask.sum(1).astype(int)
        expected = sequence[np.arange(len(lengths)), lengths - 1]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(inputs)), expected, rtol=1e-5, atol=1e-5
    )


def _frozen_prefix_backbone(tiny_tokenizer, layers=1, architecture="bert", num_layers=2):
    return marc_keras.LoRABackbone(
        tiny_hub_backbone(tiny_tokenizer.vocabulary_size, architecture, num_layers=num_layers),
        tokenizer=tiny_tokenizer,
        lora_rank=2,
        frozen_prefix_layers=layers,
    )


def test_a_frozen_prefix_trains_lora_only_above_it_and_its_states_give_the_same_vectors(
    tiny_tokenizer,
):
    layer = _frozen_prefix_backbone(tiny_tokenizer, layers=2, num_layers=3)
    _perturb_lora(layer)
    trainable = {v.path for v in layer.trainable_weights}
    # query and value of the third block only, two factors each
    assert len(trainable) == 4 and all("transformer_layer_2" in path for path in trainable)
    tokens = tiny_tokenizer(["the action movie", "user likes drama film a", "a"])
    states = layer.prefix_states(tokens, batch_size=2)
    assert states.shape == (3, *tokens["token_ids"].shape[1:], 16)
    # Past a text's end the states are zeros, and trimming them changes nothing.
    assert not states[2, 3:].any()
    expected = keras.ops.convert_to_numpy(layer(tokens))
    got = layer({"prefix_states": states, "padding_mask": tokens["padding_mask"]})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-6)
    # The cached states are those of the first two blocks of the full forward pass.
    all_layers = layer(tokens, return_all_layers=True)["layers"]
    np.testing.assert_allclose(
        layer.pooling(states, tokens["padding_mask"]),
        keras.ops.convert_to_numpy(all_layers[:, 2]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_gradients_through_prefix_states_reach_exactly_the_lora_above_the_prefix(tiny_tokenizer):
    layer = _frozen_prefix_backbone(tiny_tokenizer, layers=1)
    _perturb_lora(layer)
    tokens = tiny_tokenizer(["the action movie", "user likes drama film a"])
    states = layer.prefix_states(tokens)
    output = layer({"prefix_states": states, "padding_mask": tokens["padding_mask"]})
    torch.sum(output**2).backward()
    with_gradient = {v.path for v in layer.weights if v.value.grad is not None}
    assert with_gradient == {v.path for v in layer.trainable_weights}
    assert len(with_gradient) == 4


def test_bad_frozen_prefixes_are_explained(tiny_tokenizer):
    with pytest.raises(ValueError, match="between 1 and 1 .*2 blocks"):
        _frozen_prefix_backbone(tiny_tokenizer, layers=2)
    with pytest.raises(ValueError, match="final norm"):
        _frozen_prefix_backbone(tiny_tokenizer, layers=1, architecture="llama")
    layer = _frozen_prefix_backbone(tiny_tokenizer, layers=0)
    with pytest.raises(ValueError, match="frozen_prefix_layers > 0"):
        layer.prefix_states(tiny_tokenizer(["a"]))


def test_merged_copy_has_no_lora_and_the_same_vectors(make_tiny_backbone):
    layer = make_tiny_backbone(lora_rank=2, architecture="llama", pooling="last")
    rng = np.random.default_rng(0)
    for variable in layer.trainable_variables:
        variable.assign(rng.normal(size=variable.shape) * 0.3)
    tokens = layer.tokenize(["the action movie", "a user likes the film"])
    merged = layer.merged()
    assert merged.lora_rank == 0 and merged.trainable_weights == []
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(merged(tokens)),
        keras.ops.convert_to_numpy(layer(tokens)),
        atol=1e-5,
    )


def test_lora_alpha_scales_the_update_and_is_saved(tiny_tokenizer):
    layer = marc_keras.LoRABackbone(
        tiny_hub_backbone(tiny_tokenizer.vocabulary_size, "bert", 0),
        tokenizer=tiny_tokenizer,
        lora_rank=2,
        lora_alpha=6.0,
    )
    dense = next(d for d in layer.backbone._flatten_layers() if getattr(d, "lora_enabled", 0))
    dense.lora_kernel_a.assign(np.full(dense.lora_kernel_a.shape, 0.1))
    dense.lora_kernel_b.assign(np.full(dense.lora_kernel_b.shape, 0.2))
    update = keras.ops.convert_to_numpy(dense.kernel) - keras.ops.convert_to_numpy(dense._kernel)
    expected = (
        6.0
        / 2
        * np.tensordot(
            keras.ops.convert_to_numpy(dense.lora_kernel_a),
            keras.ops.convert_to_numpy(dense.lora_kernel_b),
            axes=1,
        )
    )
    np.testing.assert_allclose(update, expected, rtol=1e-5)
    assert marc_keras.LoRABackbone.from_config(layer.get_config()).lora_alpha == 6.0
    with pytest.raises(ValueError, match="lora_alpha must be positive"):
        marc_keras.LoRABackbone(
            tiny_hub_backbone(tiny_tokenizer.vocabulary_size, "bert", 0), lora_alpha=0.0
        )
