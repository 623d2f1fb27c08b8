"""Every CTR ranker of the registry on every tier: shapes, saving, gradients, learning."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import synthetic_features

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.config import DownstreamConfig
from marc_keras.config.downstream_config import RANKERS
from marc_keras.config.ranker_tier import TIERS
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.ranking.ranker_registry import (
    constructor_arguments,
    ranker_class,
    ranker_settings,
)

SMALL = {"train": 120, "validation": 40, "test": 40}


def _ranker(name, tier="full", vectors=True, **kwargs):
    features, item_vectors = synthetic_features(sizes=SMALL)
    user_vectors = np.random.default_rng(5).normal(size=(51, 6)).astype("float32")
    tables = (user_vectors, item_vectors) if vectors else (None, None)
    ranker = ranker_class(name).from_features(
        features, TIERS[tier], *tables, **{**ranker_settings(name), **kwargs}
    )
    return ranker, features.tier_inputs(TIERS[tier])


@pytest.mark.parametrize("tier", sorted(TIERS))
@pytest.mark.parametrize("name", RANKERS)
def test_every_ranker_takes_every_tier_with_and_without_vectors(name, tier):
    for vectors in (False, True):
        ranker, inputs = _ranker(name, tier, vectors)
        logits = keras.ops.convert_to_numpy(ranker(inputs["test"]))
        assert logits.shape == (40, 1) and np.isfinite(logits).all()
        assert len(ranker.fields(inputs["test"])) == ranker.num_fields


@pytest.mark.parametrize("name", RANKERS)
def test_keras_round_trip_keeps_predictions_and_config(name, tmp_path):
    ranker, inputs = _ranker(name)
    expected = ranker.predict(inputs["test"], verbose=0)
    ranker.save(tmp_path / f"{name}.keras")
    loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
    np.testing.assert_allclose(loaded.predict(inputs["test"], verbose=0), expected, atol=1e-6)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        ranker.get_config(), sort_keys=True
    )


@pytest.mark.parametrize("name", RANKERS)
def test_gradients_reach_exactly_the_trainable_weights(name):
    ranker, inputs = _ranker(name)
    loss = keras.ops.sum(ranker(inputs["train"], training=True) ** 2)
    trainable = [weight.value for weight in ranker.trainable_weights]
    gradients = torch.autograd.grad(loss, trainable, allow_unused=True)
    missing = [w.path for w, g in zip(ranker.trainable_weights, gradients) if g is None]
    assert not missing, f"{name}: no gradient reaches {missing}"
    assert all(not weight.value.requires_grad for weight in ranker.non_trainable_weights)


@pytest.mark.parametrize("name", RANKERS)
def test_every_ranker_learns_the_item_signal(name):
    features, _ = synthetic_features()
    config = DownstreamConfig(seeds=(0,), max_epochs=5, batch_size=256, ranker=name)
    _, test_auc, _, _ = DownstreamEvaluator(features, config).train_one("kar", 0)
    assert test_auc > 0.75, f"{name} reached test AUC {test_auc:.3f} on a signal in the item id"


def test_the_row_without_vectors_is_named_after_the_ranker_and_pairs_the_others():
    features, item_vectors = synthetic_features(unique_items=True)
    config = DownstreamConfig(seeds=(0,), max_epochs=2, batch_size=256, tiers=("kar",))
    evaluator = DownstreamEvaluator(features, dataclasses.replace(config, ranker="deepfm"))
    rows = evaluator.evaluate({"deepfm": None, "item": lambda seed: (None, item_vectors)})
    assert [row["baseline"] for row in rows] == ["deepfm", "deepfm"]
    assert rows[0]["paired_delta_mean"] == 0.0


@pytest.mark.parametrize(
    "name, paired_fields", [("deepfm", slice(None)), ("deepfm-kar", slice(-2))]
)
def test_deepfm_sums_first_order_fm_and_deep_logits(name, paired_fields):
    ranker, inputs = _ranker(name, embedding_dim=4)
    logits = keras.ops.convert_to_numpy(ranker(inputs["test"]))  # builds every layer
    fields = ranker.fields(inputs["test"])
    stacked = np.stack([keras.ops.convert_to_numpy(field) for field in fields], axis=1)
    flat = stacked.reshape(len(stacked), -1)
    # The FM pairs every field, or (KAR's) all but the two vector fields, which come last.
    paired = stacked[:, paired_fields]
    fm = 0.5 * (paired.sum(axis=1) ** 2 - (paired**2).sum(axis=1)).sum(axis=1, keepdims=True)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in ranker.first_order.weights)
    deep = flat
    for layer in ranker.deep:
        kernel_d, bias_d = (keras.ops.convert_to_numpy(w) for w in layer.weights)
        deep = deep @ kernel_d + bias_d
        deep = np.maximum(deep, 0) if layer.activation is keras.activations.relu else deep
    expected = flat @ kernel + bias + fm + deep
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_fignn_read_out_is_sigmoid_weighted_field_scores():
    ranker, inputs = _ranker("fignn", embedding_dim=4)
    logits = keras.ops.convert_to_numpy(ranker(inputs["test"]))  # builds every layer
    stacked = keras.ops.stack(ranker.fields(inputs["test"]), axis=1)
    nodes = keras.ops.convert_to_numpy(ranker.graph(stacked))  # (B, F, D)
    score_kernel = keras.ops.convert_to_numpy(ranker.field_score.kernel)  # (D, 1)
    weight_kernel = keras.ops.convert_to_numpy(ranker.field_weight.kernel)  # (F * D, F)
    weights = 1.0 / (1.0 + np.exp(-(nodes.reshape(len(nodes), -1) @ weight_kernel)))
    expected = (weights * (nodes @ score_kernel)[..., 0]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_din_weighs_only_real_history_items():
    ranker, inputs = _ranker("din", vectors=False)
    batch = {name: array[:4].copy() for name, array in inputs["test"].items()}
    batch["history_items"][:, 2:] = 0  # padding from the third slot on
    before = keras.ops.convert_to_numpy(ranker(batch))
    # What sits under padding must not matter: only index 0's embedding changes.
    table = ranker.item_embedding.embeddings
    table.assign(keras.ops.convert_to_numpy(table) + np.eye(table.shape[0], 1, 0) * 5.0)
    batch_padding_changed = keras.ops.convert_to_numpy(ranker(batch))
    np.testing.assert_allclose(batch_padding_changed, before, rtol=1e-5, atol=1e-5)


def test_deepfm_kar_is_deepfm_without_vectors_in_its_fm():
    config = DownstreamConfig(ranker="deepfm-kar")
    assert ranker_class("deepfm-kar") is ranker_class("deepfm")
    ranker, _ = _ranker("deepfm-kar")
    assert ranker.get_config()["fm_vector_fields"] is False
    assert constructor_arguments(config, config.adaptor_setting())["fm_vector_fields"] is False
    assert "fm_vector_fields" not in ranker_settings("deepfm")


def test_an_unknown_ranker_lists_the_valid_names():
    with pytest.raises(ValueError, match="dcnv2.*din.*Did you mean 'deepfm'"):
        ranker_class("depfm")
    with pytest.raises(ValueError, match="evaluate.ranker must be one of"):
        DownstreamConfig(ranker="lightgbm")


@pytest.mark.parametrize("name", [name for name in RANKERS if ranker_class(name).uniform_fields])
def test_stacking_rankers_refuse_a_narrower_user_field(name):
    with pytest.raises(ValueError, match="user_adaptor_dim=8"):
        _ranker(name, user_adaptor_dim=8)
