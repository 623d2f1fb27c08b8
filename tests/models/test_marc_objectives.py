"""MARC configured as the baselines and ablations of the method registry."""

import numpy as np
import pytest

import keras
import marc_keras
from helpers import genre_match_task
from marc_keras.losses.pair_losses import cosine_similarity


def _model(make_tiny_backbone, **kwargs):
    return marc_keras.MARC(
        make_tiny_backbone(lora_rank=2, seed=0),
        compression=marc_keras.CompressionNetwork((16,), 8, name="compression"),
        matching=marc_keras.MatchingNetwork((16,), name="matching"),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("settings", "objective_log"),
    [
        ({"objective": "mrl", "mrl_prefixes": (2, 4)}, "bce"),
        ({"objective": "contrastive", "hsic_weight": 0.0}, "contrastive"),
        ({"objective": "aoe", "reconstruction_weight": 1.0, "hsic_weight": 0.0}, "aoe"),
        ({"objective": "cosine_bce"}, "bce"),
        ({"objective": "cosine"}, "cosine"),
    ],
)
def test_every_objective_trains_and_survives_a_keras_round_trip(
    make_tiny_backbone, tmp_path, settings, objective_log
):
    model = _model(make_tiny_backbone, **settings)
    users, items, labels = genre_match_task(64)
    x = model.tokenize(users, items)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, labels, batch_size=16, epochs=2, verbose=0)
    assert objective_log in history.history and np.isfinite(history.history["loss"]).all()
    uses_matching = settings["objective"] in ("bce", "mrl")
    assert all(v.trainable == uses_matching for v in model.matching.weights)
    if settings.get("reconstruction_weight"):
        assert history.history["reconstruction"][-1] > 0
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.objective == settings["objective"]
    expected, got = model.predict_on_batch(x), loaded.predict_on_batch(x)
    assert set(expected) == set(got)
    for name in expected:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(expected[name]), atol=1e-5)


def test_mrl_prefixes_are_nested_and_each_has_its_own_head(make_tiny_backbone):
    model = _model(make_tiny_backbone, objective="mrl", mrl_prefixes=(2, 4))
    users, items, _ = genre_match_task(8)
    outputs = model.predict_on_batch(model.tokenize(users, items))
    user, item = np.asarray(outputs["user_compressed"]), np.asarray(outputs["item_compressed"])
    for width, head in zip((2, 4), model.prefix_matching):
        # the prefix head reads the first `width` coordinates and nothing else
        assert head.dense_layers[0].kernel.shape[0] == 3 * width
        expected = head(user[:, :width], item[:, :width])
        np.testing.assert_allclose(
            np.asarray(outputs[f"logit_prefix_{width}"]),
            keras.ops.convert_to_numpy(expected),
            atol=1e-6,
        )
    with pytest.raises(
        ValueError, match="mrl_prefixes must be increasing widths below the compressed width 8"
    ):
        _model(make_tiny_backbone, objective="mrl", mrl_prefixes=(4, 8))


def test_objectives_without_a_click_head_score_by_cosine(make_tiny_backbone):
    model = _model(make_tiny_backbone, objective="contrastive")
    users, items, _ = genre_match_task(8)
    outputs = model.predict_on_batch(model.tokenize(users, items))
    expected = cosine_similarity(outputs["user_compressed"], outputs["item_compressed"])
    np.testing.assert_allclose(np.asarray(outputs["logit"])[:, 0], np.asarray(expected), atol=1e-6)


def test_bad_objective_settings_are_named(make_tiny_backbone):
    with pytest.raises(
        ValueError, match="objective must be one of bce, cosine_bce, cosine, contrastive, aoe, mrl"
    ):
        _model(make_tiny_backbone, objective="mse")
    with pytest.raises(ValueError, match="reconstruction_weight must be >= 0"):
        _model(make_tiny_backbone, reconstruction_weight=-1)
