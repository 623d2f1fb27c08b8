import json

import numpy as np
import pytest

import keras
import marc_keras
from helpers import genre_match_task, numpy_hsic


def _snapshot(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


def test_fit_changes_exactly_lora_kernels_and_heads(make_tiny_marc):
    model = make_tiny_marc()
    users, items, labels = genre_match_task(64)
    x = model.tokenize(users, items)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = _snapshot(model)
    model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
    after = _snapshot(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    trainable = {v.path for v in model.trainable_weights}
    assert changed == trainable
    lora = {p for p in trainable if p.endswith(("lora_kernel_a", "lora_kernel_b"))}
    heads = trainable - lora
    assert len(lora) == 8
    assert heads and all(p.startswith(("compression/", "matching/")) for p in heads)
    frozen_backbone = [v.path for v in model.backbone.weights if v.path not in lora]
    assert frozen_backbone and all(np.array_equal(before[p], after[p]) for p in frozen_backbone)


def test_fit_learns_a_task_whose_labels_are_in_the_texts(make_tiny_backbone):
    model = marc_keras.MARC(
        make_tiny_backbone(lora_rank=4, seed=1),
        compression=marc_keras.CompressionNetwork((32,), 16),
        matching=marc_keras.MatchingNetwork((32,)),
    )
    users, items, labels = genre_match_task(512, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(model.tokenize(users, items), labels, batch_size=32, epochs=12, verbose=0)
    bce = history.history["bce"]
    assert bce[-1] < 0.6 * bce[0]
    test_users, test_items, test_labels = genre_match_task(256, seed=2)
    logs = model.evaluate(
        model.tokenize(test_users, test_items), test_labels, verbose=0, return_dict=True
    )
    assert logs["auc"] > 0.8, logs


def test_logs_bce_hsic_and_auc_and_the_loss_adds_up(make_tiny_marc):
    model = make_tiny_marc(hsic_weight=0.5)
    users, items, labels = genre_match_task(32)
    model.compile(optimizer=keras.optimizers.Adam(0.0))
    logs = model.evaluate(
        model.tokenize(users, items), labels, batch_size=32, verbose=0, return_dict=True
    )
    assert set(logs) == {"loss", "bce", "hsic_user", "hsic_item", "auc"}
    assert logs["hsic_user"] > 0 and logs["hsic_item"] > 0
    assert logs["loss"] == pytest.approx(
        logs["bce"] - 0.5 * (logs["hsic_user"] + logs["hsic_item"]), rel=1e-5
    )
    no_hsic = make_tiny_marc(hsic_weight=0.0)
    no_hsic.compile(optimizer="adam")
    logs = no_hsic.evaluate(no_hsic.tokenize(users, items), labels, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "bce", "auc"}


def test_hsic_scale_and_bandwidth_reach_the_logged_terms(make_tiny_marc, tmp_path):
    users, items, labels = genre_match_task(32)
    logs = {}
    for name, settings in {
        "normalised": {},
        "trace": {"hsic_scale": "trace"},
        "fixed": {"hsic_bandwidth": 2.0},
    }.items():
        model = make_tiny_marc(hsic_weight=0.5, **settings)
        model.compile(optimizer=keras.optimizers.Adam(0.0))
        x = model.tokenize(users, items)
        logs[name] = model.evaluate(x, labels, batch_size=32, verbose=0, return_dict=True)
        predicted = model.predict(x, batch_size=32, verbose=0)
        expected = numpy_hsic(
            predicted["user_original"],
            predicted["user_compressed"],
            settings.get("hsic_bandwidth"),
            settings.get("hsic_bandwidth"),
            settings.get("hsic_scale", "normalised"),
        )
        assert logs[name]["hsic_user"] == pytest.approx(expected, rel=1e-3), name
        model.save(tmp_path / f"{name}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
        assert (loaded.hsic_scale, loaded.hsic_bandwidth) == (
            model.hsic_scale,
            model.hsic_bandwidth,
        )
    assert logs["trace"]["hsic_user"] == pytest.approx(
        31**2 * logs["normalised"]["hsic_user"], rel=1e-4
    )
    with pytest.raises(ValueError, match="hsic_scale must be one of normalised, trace"):
        make_tiny_marc(hsic_scale="sum")
    with pytest.raises(ValueError, match="hsic_bandwidth must be positive"):
        make_tiny_marc(hsic_bandwidth=0.0)


def test_distinct_hsic_rows_count_each_user_of_a_grouped_batch_once(make_tiny_marc, tmp_path):
    from marc_keras.pair_batches import PairBatches

    users, items, labels = genre_match_task(48, seed=5)
    x = None
    terms = {}
    for rows in ("pairs", "distinct"):
        model = make_tiny_marc(hsic_weight=0.5, hsic_rows=rows)
        x = x or model.tokenize(users, items, pad_to_max_length=False)
        batch, batch_labels = PairBatches(x, labels, 24, seed=0, items_per_user=6)[0]
        outputs = {key: keras.ops.convert_to_numpy(value) for key, value in model(batch).items()}
        _, hsic_terms = model._objective_and_hsic(batch_labels, model(batch))
        terms[rows] = float(keras.ops.convert_to_numpy(hsic_terms["user"]))
        if rows == "pairs":
            assert "user_distinct_original" not in outputs
            expected = numpy_hsic(outputs["user_original"], outputs["user_compressed"])
        else:
            distinct_users = outputs["user_distinct_original"]
            # One row per distinct user of the batch: the pairs' rows, deduplicated.
            assert len(distinct_users) == len(np.unique(batch["user_index"])) < len(batch_labels)
            np.testing.assert_allclose(
                np.unique(outputs["user_original"], axis=0),
                np.unique(distinct_users, axis=0),
                atol=1e-6,
            )
            expected = numpy_hsic(distinct_users, outputs["user_distinct_compressed"])
            model.save(tmp_path / "distinct.keras")
            assert keras.saving.load_model(tmp_path / "distinct.keras").hsic_rows == "distinct"
        assert terms[rows] == pytest.approx(expected, rel=1e-3), rows
    assert terms["pairs"] != pytest.approx(terms["distinct"], rel=1e-3)
    with pytest.raises(ValueError, match="hsic_rows must be one of pairs, distinct"):
        make_tiny_marc(hsic_rows="users")


def test_keras_file_round_trip_gives_identical_outputs_and_resumes(make_tiny_marc, tmp_path):
    model = make_tiny_marc()
    users, items, labels = genre_match_task(32)
    x = model.tokenize(users, items)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "marc.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True
    )
    assert loaded.backbone.tokenizer.to_json() == model.backbone.tokenizer.to_json()
    assert {v.path for v in loaded.trainable_weights} == {v.path for v in model.trainable_weights}
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    loaded.fit(x, labels, batch_size=16, epochs=1, verbose=0)


def test_separate_item_compression_round_trips(make_tiny_backbone, tmp_path):
    model = marc_keras.MARC(
        make_tiny_backbone(),
        compression=marc_keras.CompressionNetwork((8,), 4, name="user_compression"),
        item_compression=marc_keras.CompressionNetwork((12,), 4, name="item_compression"),
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.tower_compression("item").hidden_units == (12,)
    assert loaded.encoder("item").compression.hidden_units == (12,)


def test_mismatched_compressed_widths_are_refused(make_tiny_backbone):
    with pytest.raises(ValueError, match="outputs 8 dims but the item one outputs 4"):
        marc_keras.MARC(
            make_tiny_backbone(),
            compression=marc_keras.CompressionNetwork((8,), 8),
            item_compression=marc_keras.CompressionNetwork((8,), 4),
        )


def test_bad_arguments_and_inputs_are_explained(make_tiny_marc):
    model = make_tiny_marc()
    with pytest.raises(ValueError, match="compile with an optimizer only"):
        model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="inputs lack.*item_token_ids"):
        model({"user_token_ids": np.ones((2, 3)), "user_padding_mask": np.ones((2, 3))})
    with pytest.raises(ValueError, match="2 user texts but 1 item"):
        model.tokenize(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="hsic_weight must be >= 0"):
        make_tiny_marc(hsic_weight=-1.0)
    with pytest.raises(ValueError, match="tower must be one of"):
        model.encoder("users")


def test_hsic_refuses_a_batch_of_one_during_fit(make_tiny_marc):
    model = make_tiny_marc()
    users, items, labels = genre_match_task(3)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="undefined for a batch of 1"):
        model.fit(model.tokenize(users, items), labels, batch_size=2, epochs=1, verbose=0)


def test_mixed_precision_keeps_lora_and_optimizer_state_float32(make_tiny_marc):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = make_tiny_marc()
        users, items, labels = genre_match_task(32)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        model.fit(model.tokenize(users, items), labels, batch_size=16, epochs=1, verbose=0)
        assert (
            model.predict(model.tokenize(users[:2], items[:2]), verbose=0)[
                "user_original"
            ].dtype.name
            == "bfloat16"
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    lora = [v for v in model.trainable_weights if v.name.startswith("lora_kernel")]
    assert lora and all(v.dtype == "float32" for v in lora)
    assert all(v.dtype == "float32" for v in model.optimizer.variables if v.name != "iteration")


def _loss_and_gradients(model, x, y):
    import torch

    model.zero_grad()
    # training=False: dropout would draw different masks for the two layouts.
    y_pred = model(x, training=False)
    loss = model.compute_loss(x, keras.ops.convert_to_tensor(y), y_pred)
    loss.backward()
    gradients = {v.path: v.value.grad.numpy().copy() for v in model.trainable_weights}
    with torch.no_grad():
        return float(loss), gradients


def test_distinct_texts_in_length_buckets_give_the_per_pair_loss_and_gradients(make_tiny_marc):
    from marc_keras.pair_batches import PairBatches

    model = make_tiny_marc(hsic_weight=0.5)
    users, items, labels = genre_match_task(48, seed=3)
    # Varied lengths, so the buckets have different widths and texts repeat.
    items = [text + " film" * (row % 3) for row, text in enumerate(items)]
    x = model.tokenize(users, items, pad_to_max_length=False)
    distinct = PairBatches(x, labels, 24, seed=0, items_per_user=3, bucket_rows=4)
    per_pair = PairBatches(x, labels, 24, seed=0, items_per_user=3, distinct_texts=False)
    batch, batch_labels = distinct[0]
    assert isinstance(batch["item_token_ids"], tuple) and len(batch["item_token_ids"]) > 1
    assert len({ids.shape[1] for ids in batch["item_token_ids"]}) > 1
    assert sum(len(ids) for ids in batch["user_token_ids"]) < len(batch_labels)
    loss, gradients = _loss_and_gradients(model, batch, batch_labels)
    expected_loss, expected_gradients = _loss_and_gradients(model, *per_pair[0])
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert gradients.keys() == expected_gradients.keys()
    for path, gradient in gradients.items():
        np.testing.assert_allclose(gradient, expected_gradients[path], rtol=1e-4, atol=1e-6)


def test_fit_and_evaluate_take_user_grouped_batches(make_tiny_marc):
    from marc_keras.pair_batches import PairBatches

    model = make_tiny_marc()
    users, items, labels = genre_match_task(64)
    x = model.tokenize(users, items, pad_to_max_length=False)
    batches = PairBatches(x, labels, 16, seed=0, items_per_user=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = _snapshot(model)
    history = model.fit(batches, epochs=1, verbose=0, callbacks=[batches.epoch_callback()])
    changed = {
        path for path, value in _snapshot(model).items() if not np.array_equal(value, before[path])
    }
    assert changed == {v.path for v in model.trainable_weights}
    assert np.isfinite(history.history["loss"][0])
    logs = model.evaluate(PairBatches(x, labels, 16, seed=0), verbose=0, return_dict=True)
    per_pair = model.evaluate(x, labels, batch_size=16, verbose=0, return_dict=True)
    assert logs["auc"] == pytest.approx(per_pair["auc"], abs=1e-6)


def test_a_frozen_prefix_cache_gives_the_token_path_loss_and_trains_only_above_it(
    make_tiny_backbone, tiny_tokenizer
):
    from helpers import tiny_hub_backbone

    from marc_keras.pair_batches import PairBatches

    backbone = marc_keras.LoRABackbone(
        tiny_hub_backbone(tiny_tokenizer.vocabulary_size, "bert"),
        tokenizer=tiny_tokenizer,
        lora_rank=2,
        frozen_prefix_layers=1,
    )
    model = marc_keras.MARC(
        backbone,
        compression=marc_keras.CompressionNetwork((16,), 8, name="compression"),
        matching=marc_keras.MatchingNetwork((16,), name="matching"),
        hsic_weight=0.5,
    )
    users, items, labels = genre_match_task(48, seed=4)
    x = model.tokenize(users, items, pad_to_max_length=False)
    cached = PairBatches(
        x, labels, 16, seed=0, items_per_user=4, prefix_encoder=backbone.prefix_states
    )
    tokens = PairBatches(x, labels, 16, seed=0, items_per_user=4)
    batch, batch_labels = cached[0]
    assert "item_prefix_states" in batch and "item_token_ids" not in batch
    loss, gradients = _loss_and_gradients(model, batch, batch_labels)
    expected_loss, expected_gradients = _loss_and_gradients(model, *tokens[0])
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for path, gradient in gradients.items():
        np.testing.assert_allclose(gradient, expected_gradients[path], rtol=1e-4, atol=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = _snapshot(model)
    model.fit(cached, epochs=1, verbose=0, callbacks=[cached.epoch_callback()])
    changed = {
        path for path, value in _snapshot(model).items() if not np.array_equal(value, before[path])
    }
    lora = {path for path in changed if "lora_kernel" in path}
    assert changed == {v.path for v in model.trainable_weights}
    assert len(lora) == 4 and all("transformer_layer_1" in path for path in lora)


def test_heads_train_alone_on_given_backbone_vectors_and_lora_trains_again_after(make_tiny_marc):
    model = make_tiny_marc()
    users, items, labels = genre_match_task(64)
    x = model.tokenize(users, items)
    vectors = {
        f"{tower}_original": keras.ops.convert_to_numpy(
            model.backbone(
                {"token_ids": x[f"{tower}_token_ids"], "padding_mask": x[f"{tower}_padding_mask"]}
            )
        )
        for tower in ("user", "item")
    }
    # Given vectors stand in for the backbone: the same logits as from tokens.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(vectors)["logit"]),
        keras.ops.convert_to_numpy(model(x)["logit"]),
        atol=1e-5,
    )
    flags = {v.path: v.trainable for v in model.weights}
    lora_and_heads = {v.path for v in model.trainable_weights}
    before = _snapshot(model)
    history = model.fit_heads(
        vectors, labels, (vectors, labels), keras.optimizers.Adam(1e-2), epochs=2, batch_size=16
    )
    assert len(history.history["val_auc"]) >= 1
    after = _snapshot(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    heads = {p for p in lora_and_heads if p.startswith(("compression/", "matching/"))}
    assert changed == heads
    # Every flag is back: LoRA factors trainable, pretrained weights frozen.
    assert {v.path: v.trainable for v in model.weights} == flags
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
    again = _snapshot(model)
    assert {p for p in after if not np.array_equal(after[p], again[p])} == lora_and_heads


def test_gradient_shares_equal_a_direct_autograd_computation(make_tiny_marc):
    import torch

    model = make_tiny_marc(hsic_weight=0.5)
    users, items, labels = genre_match_task(16)
    x = model.tokenize(users, items)
    found = model.gradient_shares(x, labels)

    compression = [w.value for w in model.compression.trainable_weights]
    lora = [w.value for w in model.backbone.trainable_weights]
    assert lora and all("lora" in w.path for w in model.backbone.trainable_weights)
    y_pred = model(x, training=False)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)(labels[:, None], y_pred["logit"])
    hsic_part = -0.5 * (
        marc_keras.hsic(y_pred["user_original"], y_pred["user_compressed"])
        + marc_keras.hsic(y_pred["item_original"], y_pred["item_compressed"])
    )

    def norm(value, weights):
        gradients = torch.autograd.grad(value, weights, retain_graph=True)
        return float(torch.sqrt(sum((g**2).sum() for g in gradients)))

    for group, weights in (("compression", compression), ("lora", lora)):
        objective, hsic_norm = norm(bce, weights), norm(hsic_part, weights)
        assert found["objective_norm"][group] == pytest.approx(objective, rel=1e-4)
        assert found["hsic_norm"][group] == pytest.approx(hsic_norm, rel=1e-4)
        share = found["gradient_share_hsic"][group]
        assert share == pytest.approx(hsic_norm / (objective + hsic_norm), rel=1e-4)
        assert 0 < share < 1
    without = make_tiny_marc(hsic_weight=0.0).gradient_shares(x, labels)
    assert without["gradient_share_hsic"] == {"compression": 0.0, "lora": 0.0}
