import keras
import numpy as np
import pytest
import torch

import marc_keras
from causal_lm_helpers import MOVIE_TITLES, tiny_causal_tokenizer, tiny_generative_model
from marc_keras.generative.generative_recommender import TRAINING_INPUTS, GenerativeRecommender
from marc_keras.generative.title_prompts import TitlePrompts

HISTORIES = [("1",), ("2", "3", "6"), ("5", "1")]
TARGETS = ["3", "4", "2"]


@pytest.fixture
def setup():
    tokenizer = tiny_causal_tokenizer()
    return tiny_generative_model(tokenizer), TitlePrompts(tokenizer, MOVIE_TITLES)


def _full_logits(model, token_ids):
    """Logits of every position of one unpadded sequence, from the keras-hub backbone."""
    ids = np.array([token_ids], "int32")
    hidden = model.lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return keras.ops.convert_to_numpy(model.lm.token_embedding(hidden, reverse=True))[0]


def test_logits_at_target_positions_predict_the_title_tokens(setup):
    model, prompts = setup
    arrays = prompts.training_arrays(HISTORIES, TARGETS)
    logits = keras.ops.convert_to_numpy(model({name: arrays[name] for name in TRAINING_INPUTS}))
    for row in range(len(TARGETS)):
        length = int(arrays["padding_mask"][row].sum())
        reference = _full_logits(model, arrays["token_ids"][row, :length])
        targets = int(arrays["target_mask"][row].sum())
        positions = arrays["target_positions"][row, :targets]
        np.testing.assert_allclose(logits[row, :targets], reference[positions], atol=1e-5)


def test_loss_is_the_mean_cross_entropy_over_title_tokens(setup):
    model, prompts = setup
    arrays = prompts.training_arrays(HISTORIES, TARGETS)
    logits = keras.ops.convert_to_numpy(model({name: arrays[name] for name in TRAINING_INPUTS}))
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, arrays["target_ids"][..., None], axis=-1)[..., 0]
    mask = arrays["target_mask"]
    expected = -(picked * mask).sum() / mask.sum()
    loss = model.compute_loss(y=arrays["target_ids"], y_pred=logits, sample_weight=mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_prompt_state_is_the_last_real_token_under_right_padding(setup):
    model, prompts = setup
    tokens = prompts.prompt_arrays(HISTORIES)
    assert len(set(tokens["padding_mask"].sum(axis=1))) == 3  # really ragged
    states = model.prompt_states(tokens, batch_size=2)
    for row, ids in enumerate(prompts.prompt_ids(HISTORIES)):
        padded = np.array([ids], "int32")
        hidden = model.lm({"token_ids": padded, "padding_mask": np.ones_like(padded)})
        expected = keras.ops.convert_to_numpy(hidden)[0, -1]
        np.testing.assert_allclose(states[row], expected, atol=1e-5)


def test_fit_changes_exactly_the_lora_weights(setup):
    model, prompts = setup
    arrays = prompts.training_arrays(HISTORIES, TARGETS)
    trainable = {id(variable) for variable in model.trainable_variables}
    assert trainable and all(
        variable.name in ("lora_kernel_a", "lora_kernel_b")
        for variable in model.trainable_variables
    )
    before = [keras.ops.convert_to_numpy(variable).copy() for variable in model.variables]
    x = {name: arrays[name] for name in TRAINING_INPUTS}
    logits = model(x, training=True)
    loss = model.compute_loss(
        y=arrays["target_ids"], y_pred=logits, sample_weight=arrays["target_mask"]
    )
    loss.backward()
    with_gradient = {
        id(variable) for variable in model.variables if variable.value.grad is not None
    }
    # LoRA B starts at zero, so A gets no gradient on the first step; B does.
    assert with_gradient <= trainable and with_gradient
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    model.fit(x, arrays["target_ids"], sample_weight=arrays["target_mask"], epochs=2, verbose=0)
    for variable, old in zip(model.variables, before):
        moved = not np.array_equal(keras.ops.convert_to_numpy(variable), old)
        if id(variable) not in trainable and "optimizer" not in variable.path:
            assert not moved, variable.path


def test_lora_alpha_scales_the_update():
    tokenizer = tiny_causal_tokenizer()
    scaled = tiny_generative_model(tokenizer, lora_alpha=6.0)
    layers = [layer for layer in scaled.lm._flatten_layers() if getattr(layer, "lora_enabled", 0)]
    assert layers and all(layer.lora_alpha == 6.0 for layer in layers)
    restored = GenerativeRecommender.from_config(scaled.get_config())
    assert restored.backbone.lora_alpha == 6.0


def test_keras_file_round_trip(setup, tmp_path):
    model, prompts = setup
    arrays = prompts.training_arrays(HISTORIES, TARGETS)
    x = {name: arrays[name] for name in TRAINING_INPUTS}
    for variable in model.trainable_variables:
        variable.assign(np.random.default_rng(0).normal(size=variable.shape) * 0.1)
    expected = keras.ops.convert_to_numpy(model(x))
    path = tmp_path / "generative.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-5)
    assert loaded.tokenizer.to_json() == model.tokenizer.to_json()


def test_refuses_mean_pooling_and_encoder_backbones(tiny_tokenizer, make_tiny_backbone):
    with pytest.raises(ValueError, match="pooling='last'"):
        GenerativeRecommender(make_tiny_backbone(pooling="mean", architecture="llama"))
    with pytest.raises(ValueError, match="not a keras-hub causal LM"):
        GenerativeRecommender(make_tiny_backbone(pooling="last", architecture="bert"))


def test_public_name():
    assert marc_keras.GenerativeRecommender is GenerativeRecommender
    assert torch.is_grad_enabled()
