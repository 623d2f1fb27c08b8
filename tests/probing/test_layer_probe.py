import numpy as np
import pytest

import keras
from marc_keras.config import DownstreamConfig
from marc_keras.data import InteractionData, KARSplit, MovieLens, SplitConfig
from marc_keras.probing.layer_probe import LayerProbe, LayerVectors, evaluate_layers
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.ranking.ranking_features import RankingFeatures

SMALL = DownstreamConfig(max_epochs=1, batch_size=256, seeds=(0,), train_samples=600)


@pytest.fixture(scope="module")
def small(ml1m_dir):
    """The split and features of MovieLens' first 60 users and the items they rated."""
    full = MovieLens.load(ml1m_dir)
    interactions = full.interactions[full.interactions["user_id"].astype(int) <= 60].reset_index(
        drop=True
    )
    items = full.items[full.items["item_id"].isin(interactions["item_id"])].reset_index(drop=True)
    data = InteractionData(interactions, items, full.users)
    split = KARSplit.build(data, MovieLens.text_templates(), SplitConfig())
    return split, RankingFeatures(split, data)


def random_layer_vectors(split, layers=3, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    user_ids, item_ids = sorted(split.user_texts), sorted(split.item_texts)
    return LayerVectors(
        np.array(user_ids),
        rng.normal(size=(len(user_ids), layers, dim)).astype("float32"),
        np.array(item_ids),
        rng.normal(size=(len(item_ids), layers, dim)).astype("float32"),
    )


def test_downstream_part_scores_each_chosen_layer(small):
    split, features = small
    evaluator = DownstreamEvaluator(features, SMALL, log=lambda _: None)
    vectors = random_layer_vectors(split)
    rows = evaluate_layers(evaluator, vectors, layers=[2, 0], method="synthetic")
    assert [(row["method"], row["layer"], row["name"]) for row in rows] == [
        ("synthetic", 0, "synthetic/layer-0"),
        ("synthetic", 2, "synthetic/layer-2"),
    ]
    for row in rows:
        assert 0.0 <= row["auc_mean"] <= 1.0 and row["auc_std"] == 0.0 and len(row["aucs"]) == 1
    with pytest.raises(ValueError, match=r"Layers \[3\] are not in 0..2 for 'synthetic'"):
        evaluate_layers(evaluator, vectors, layers=[3], method="synthetic")


def test_last_layer_is_the_pooled_output_in_input_order(make_tiny_backbone):
    backbone = make_tiny_backbone(lora_rank=0)
    texts = [
        "the movie",
        "a female user likes the comedy film",
        "drama",
        "the horror movie the user likes",
    ]
    layers = LayerProbe(backbone, batch_size=3, verbose=0).encode(texts)
    assert layers.shape == (4, backbone.num_layers + 1, 16) and layers.dtype == np.float32
    pooled = keras.ops.convert_to_numpy(backbone(backbone.tokenize(texts)))
    np.testing.assert_allclose(layers[:, -1], pooled, atol=1e-5)
    assert not np.allclose(layers[:, 0], layers[:, -1])


def test_tiny_backbone_gives_one_result_per_layer_and_reuses_its_cache(
    small, make_tiny_backbone, tmp_path
):
    split, features = small
    cache = tmp_path / "layers-tiny.npz"
    probe = LayerProbe(make_tiny_backbone(lora_rank=0, seed=0), verbose=0)
    vectors = probe.encode_split(split, cache_path=cache, fingerprint="tiny-0")
    assert cache.is_file() and not list(tmp_path.glob(".partial-*"))
    assert vectors.users.shape == (len(split.user_texts), 3, 16) and vectors.num_layers == 3
    assert vectors.items.shape == (len(split.item_texts), 3, 16) and vectors.compressed is None

    other = LayerProbe(make_tiny_backbone(lora_rank=0, seed=1), verbose=0)
    reused = other.encode_split(split, cache_path=cache, fingerprint="tiny-0")
    np.testing.assert_array_equal(reused.users, vectors.users)
    np.testing.assert_array_equal(reused.item_ids, vectors.item_ids)
    fresh = other.encode_split(split, cache_path=cache, fingerprint="tiny-1")
    assert not np.allclose(fresh.users, vectors.users)
    assert LayerVectors.load(cache, "tiny-0") is None

    rows = other.probe(
        split,
        features,
        SMALL,
        method="tiny",
        cache_path=cache,
        fingerprint="tiny-1",
        log=lambda _: None,
    )
    assert [(row["method"], row["layer"]) for row in rows] == [
        ("tiny", 0),
        ("tiny", 1),
        ("tiny", 2),
    ]
    assert all(0.0 <= row["auc_mean"] <= 1.0 and len(row["loglosses"]) == 1 for row in rows)
