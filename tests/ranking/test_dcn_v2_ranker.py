import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_layer_test, synthetic_features

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.config import DownstreamConfig
from marc_keras.config.ranker_tier import TIERS
from marc_keras.ranking.dcn_v2_ranker import DCNv2Ranker
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    features, item_vectors = synthetic_features(sizes={"train": 100, "validation": 50, "test": 50})
    ranker = DCNv2Ranker.from_features(features, TIERS["full"], item_vectors=item_vectors)
    inputs = features.tier_inputs(TIERS["full"])["test"]
    expected = ranker.predict(inputs, verbose=0)
    ranker.save(tmp_path / "ranker.keras")
    loaded = keras.saving.load_model(tmp_path / "ranker.keras")
    np.testing.assert_array_equal(loaded.predict(inputs, verbose=0), expected)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        ranker.get_config(), sort_keys=True
    )


def test_genre_and_rating_fields_are_means_of_embeddings():
    # The shares times the (vocabulary, D) kernel must equal the mean of the
    # looked-up embeddings that the per-item formulation computes.
    features, _ = synthetic_features(sizes={"train": 20, "validation": 5, "test": 5})
    tier = TIERS["full"]
    ranker = DCNv2Ranker.from_features(features, tier, embedding_dim=3)
    inputs = features.tier_inputs(tier)["train"]
    ranker(inputs)
    table = keras.ops.convert_to_numpy(ranker.genre_embedding.kernel)  # (V, D)
    history = inputs["history_items"][0]
    per_item = []
    for item in history[history > 0]:
        genres = features.item_genres[item]
        genres = genres[genres > 0]
        per_item.append(table[genres].mean(axis=0) if len(genres) else np.zeros(3))
    expected = np.mean(per_item, axis=0)
    np.testing.assert_allclose(inputs["history_genres"][0] @ table, expected, atol=1e-6)
    ratings = features.inputs["train"]["history_ratings"][0]
    rating_table = keras.ops.convert_to_numpy(ranker.rating_embedding.kernel)  # (5, D)
    np.testing.assert_allclose(
        inputs["history_ratings"][0] @ rating_table,
        rating_table[ratings - 1].mean(axis=0),
        atol=1e-6,
    )


def test_learns_a_signal_in_the_item_id():
    features, _ = synthetic_features()
    config = DownstreamConfig(max_epochs=4, batch_size=128, seeds=(0,), learning_rate=3e-3)
    evaluator = DownstreamEvaluator(features, config, log=lambda _: None)
    for tier in TIERS:
        _, test_auc, _, epochs = evaluator.train_one(tier, 0)
        assert test_auc > 0.75, tier  # the 10% label noise caps it near 0.9
        assert 1 <= epochs <= 4


def test_a_vector_carrying_the_signal_beats_no_vector_and_is_paired_with_it():
    features, item_vectors = synthetic_features(unique_items=True)
    config = DownstreamConfig(max_epochs=3, batch_size=128, seeds=(0, 1), tiers=("kar",))
    rows = DownstreamEvaluator(features, config, log=lambda _: None).evaluate(
        {"dcnv2": None, "vector": lambda seed: (None, item_vectors)}
    )
    by_name = {row["name"]: row for row in rows}
    vector, alone = by_name["vector"], by_name["dcnv2"]
    assert vector["auc_mean"] > 0.85 and alone["auc_mean"] < 0.6
    assert vector["relaimpr"] > 0.5
    deltas = [a - b for a, b in zip(vector["aucs"], alone["aucs"])]
    assert vector["paired_deltas"] == pytest.approx(deltas)
    assert vector["paired_delta_mean"] == pytest.approx(np.mean(deltas))
    assert vector["paired_delta_std"] == pytest.approx(np.std(deltas, ddof=1))
    assert vector["lift"] is True and alone["lift"] is False
    assert vector["tier"] == "kar" and vector["seeds"] == [0, 1]


def test_a_subsample_is_drawn_anew_per_seed():
    features, _ = synthetic_features(sizes={"train": 400, "validation": 100, "test": 100})
    evaluator = DownstreamEvaluator(features, DownstreamConfig(train_samples=300))
    first, second = evaluator.train_rows(0), evaluator.train_rows(1)
    assert len(first) == len(second) == 300
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, evaluator.train_rows(0))
    full = DownstreamEvaluator(features, DownstreamConfig())
    np.testing.assert_array_equal(full.train_rows(5), np.arange(400))


def test_evaluator_is_deterministic_under_a_seed():
    features, _ = synthetic_features(sizes={"train": 400, "validation": 100, "test": 100})
    config = DownstreamConfig(max_epochs=1, batch_size=64, seeds=(3,), train_samples=300)
    first = DownstreamEvaluator(features, config, log=lambda _: None).train_one("kar", 3)[1]
    second = DownstreamEvaluator(features, config, log=lambda _: None).train_one("kar", 3)[1]
    assert first == pytest.approx(second, abs=1e-7)


def test_an_interrupted_evaluation_resumes_from_its_progress_file(tmp_path, monkeypatch):
    features, _ = synthetic_features(sizes={"train": 600, "validation": 200, "test": 200})
    config = DownstreamConfig(max_epochs=1, batch_size=128, seeds=(0, 1), tiers=("kar",))
    progress = tmp_path / "progress.json"
    first = DownstreamEvaluator(
        features, config, log=lambda _: None, progress_path=progress, progress_fingerprint="v1"
    )
    rows = first.evaluate({"dcnv2": None, "lr-2": None})
    saved = json.loads(progress.read_text())
    assert sorted(saved["results"]) == ["kar/dcnv2/0", "kar/dcnv2/1", "kar/lr-2/0", "kar/lr-2/1"]

    resumed = DownstreamEvaluator(
        features, config, log=lambda _: None, progress_path=progress, progress_fingerprint="v1"
    )
    monkeypatch.setattr(
        resumed, "train_one", lambda *args: pytest.fail("finished results must not be retrained")
    )
    assert resumed.evaluate({"dcnv2": None})[0]["aucs"] == rows[0]["aucs"]

    other_vectors = DownstreamEvaluator(
        features, config, log=lambda _: None, progress_path=progress, progress_fingerprint="v2"
    )
    trained = []
    monkeypatch.setattr(
        other_vectors,
        "train_one",
        lambda tier, seed, *tables, **settings: trained.append((tier, seed)) or (None, 0.6, 0.7, 1),
    )
    other_vectors.evaluate({"dcnv2": None})
    assert trained == [("kar", 0), ("kar", 1)]


def test_recorded_results_carry_a_base_row_to_an_evaluator_of_other_vectors(tmp_path, monkeypatch):
    # How benchmarks/ranker_zoo.py scores a row from another run: its own
    # progress file and fingerprint, the ranker alone copied over, not retrained.
    features, _ = synthetic_features(sizes={"train": 600, "validation": 200, "test": 200})
    config = DownstreamConfig(max_epochs=1, batch_size=128, seeds=(0, 1), tiers=("kar",))
    main = DownstreamEvaluator(
        features, config, log=lambda _: None, progress_path=tmp_path / "main.json"
    )
    assert main.recorded_results() == {}
    base = main.evaluate({"dcnv2": None})[0]
    recorded = main.recorded_results()
    assert sorted(recorded) == ["kar/dcnv2/0", "kar/dcnv2/1"]
    assert [recorded[f"kar/dcnv2/{seed}"]["auc"] for seed in (0, 1)] == base["aucs"]

    other = DownstreamEvaluator(
        features,
        config,
        log=lambda _: None,
        progress_path=tmp_path / "other.json",
        progress_fingerprint="another run",
    )
    other.add_results(recorded)
    trained = []
    monkeypatch.setattr(
        other,
        "train_one",
        lambda tier, seed, *tables, **settings: trained.append(seed) or (None, 0.9, 0.5, 1),
    )
    rows = {
        row["name"]: row for row in other.evaluate({"dcnv2": None, "x": lambda seed: (None, None)})
    }
    assert trained == [0, 1]
    np.testing.assert_allclose(rows["x"]["paired_deltas"], [0.9 - auc for auc in base["aucs"]])
    assert (
        DownstreamEvaluator(
            features, config, progress_path=tmp_path / "other.json"
        ).recorded_results()
        == {}
    )


def _fill_tables(ranker):
    # The frozen tables (item genre shares, external vectors) start at zero.
    rng = np.random.default_rng(1)
    for table in ranker.non_trainable_weights:
        table.assign(rng.random(table.shape).astype("float32"))


def test_history_field_is_the_mean_over_real_items_only():
    from marc_keras.ranking.field_ranker import history_mean

    embedding = keras.layers.Embedding(5, 2)
    embedding.build((None,))
    table = np.array([[9.0, -9.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], "float32")
    embedding.embeddings.assign(table)
    history = np.array([[1, 2, 0, 0], [4, 4, 3, 0], [0, 0, 0, 0]], "int32")
    expected = [[2.0, 3.0], [19.0 / 3, 22.0 / 3], [0.0, 0.0]]  # padding row 0 never counts
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(history_mean(embedding, history)), expected, atol=1e-5
    )


def test_layer_checks(cross_projection_dim=None):
    rng = np.random.default_rng(0)
    inputs = {
        "user": rng.integers(1, 6, 4).astype("int32"),
        "item": rng.integers(1, 10, 4).astype("int32"),
        "history_items": rng.integers(0, 10, (4, 3)).astype("int32"),
        "history_genres": rng.dirichlet(np.ones(4), 4).astype("float32"),
        "history_ratings": rng.dirichlet(np.ones(5), 4).astype("float32"),
        "user_fields": rng.integers(1, 3, (4, 1)).astype("int32"),
    }
    run_layer_test(
        DCNv2Ranker,
        dict(
            num_users=6,
            num_items=10,
            num_genres=4,
            num_ratings=5,
            user_field_sizes=[3],
            user_vector_dim=5,
            item_vector_dim=4,
            num_experts=2,
            embedding_dim=4,
            cross_layers=2,
            cross_projection_dim=cross_projection_dim,
            deep_units=(8,),
        ),
        inputs,
        prepare=_fill_tables,
        expected_output_shape=(4, 1),
        # item, genre, rating, 1 user field embeddings; 2 adaptors x (2 experts x 4
        # + gate 2); 2 crosses x 2; deep 2; logit 2. Frozen: genre shares, 2 vector tables.
        # A low-rank cross has two kernels (down without bias, up with bias), as a full one
        # has one kernel and a bias.
        expected_num_trainable_weights=4 + 20 + 4 + 2 + 2 + (2 if cross_projection_dim else 0),
        expected_num_non_trainable_weights=3,
    )


def test_layer_checks_with_low_rank_crosses():
    test_layer_checks(cross_projection_dim=3)


V2_LOGITS = Path(__file__).parent / "data" / "v2-ranker-logits.npy"
# The v2 adaptor: every regulariser off (the v3 defaults regularise).
ALL_OFF = dict(adaptor_input_dropout=0.0, adaptor_weight_decay=0.0)


def _v2_reference_run(**downstream_settings):
    # The run that wrote V2_LOGITS with the downstream v2 code (commit 521bfc3,
    # before adaptor regularisation existed): a ranker with user and item
    # vectors trained 2 epochs, its test logits.
    features, item_vectors = synthetic_features(
        sizes={"train": 600, "validation": 200, "test": 200}
    )
    user_vectors = np.random.default_rng(1).normal(size=(51, 6)).astype("float32")
    settings = {**ALL_OFF, **downstream_settings}
    config = DownstreamConfig(max_epochs=2, batch_size=128, seeds=(0,), tiers=("full",), **settings)
    evaluator = DownstreamEvaluator(features, config, log=lambda _: None)
    ranker, *_ = evaluator.train_one("full", 0, user_vectors, item_vectors)
    return features, ranker, ranker.predict(features.tier_inputs(TIERS["full"])["test"], verbose=0)


def test_regularisation_off_is_the_v2_ranker():
    _, _, logits = _v2_reference_run()
    np.testing.assert_allclose(logits[:, 0], np.load(V2_LOGITS), atol=1e-6)
    _, _, regularised = _v2_reference_run(adaptor_input_dropout=0.5, adaptor_input_noise=0.5)
    assert np.abs(regularised[:, 0] - np.load(V2_LOGITS)).max() > 1e-3


def test_noise_scale_comes_from_training_users_and_items_only():
    features, ranker, _ = _v2_reference_run(adaptor_input_noise=0.5)
    training = features.tier_inputs(TIERS["full"])["train"]
    for tower in ("user", "item"):
        table = keras.ops.convert_to_numpy(ranker.vector_tables[tower])
        expected = table[np.unique(training[tower])].std(axis=0)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ranker.adaptors[tower].input_std), expected, rtol=1e-5
        )
    assert not np.allclose(expected, table[1:].std(axis=0))


def test_regularised_ranker_round_trips_and_user_bottleneck_narrows_the_field(tmp_path):
    features, item_vectors = synthetic_features(sizes={"train": 100, "validation": 50, "test": 50})
    user_vectors = np.random.default_rng(1).normal(size=(51, 6)).astype("float32")
    ranker = DCNv2Ranker.from_features(
        features,
        TIERS["kar"],
        user_vectors,
        item_vectors,
        adaptor_input_dropout=0.2,
        adaptor_expert_dropout=0.1,
        adaptor_input_noise=0.5,
        adaptor_weight_decay=1e-3,
        user_adaptor_dim=8,
    )
    inputs = features.tier_inputs(TIERS["kar"])["test"]
    expected = ranker.predict(inputs, verbose=0)
    assert ranker.adaptors["user"].output_dim == 8 and ranker.adaptors["item"].output_dim == 32
    assert len(ranker.losses) == 2 * (3 * 2 + 1)  # per adaptor: 3 experts x 2 kernels + gate
    ranker.save(tmp_path / "ranker.keras")
    loaded = keras.saving.load_model(tmp_path / "ranker.keras")
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), expected, atol=1e-6)
    config = loaded.get_config()
    assert config["adaptor_input_noise"] == 0.5 and config["user_adaptor_dim"] == 8
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.adaptors["user"].input_std),
        keras.ops.convert_to_numpy(ranker.adaptors["user"].input_std),
    )


def test_each_row_trains_with_its_own_setting_and_keeps_results_of_unchanged_rows(
    tmp_path, monkeypatch
):
    features, item_vectors = synthetic_features(
        sizes={"train": 300, "validation": 100, "test": 100}
    )
    progress = tmp_path / "progress.json"
    representations = {
        "dcnv2": None,
        "a": lambda seed: (None, item_vectors),
        "b": lambda seed: (None, item_vectors),
    }

    def evaluate(row_adaptors):
        config = DownstreamConfig(
            max_epochs=1,
            batch_size=128,
            seeds=(0,),
            tiers=("kar",),
            **{**ALL_OFF, "adaptor_input_dropout": 0.2},
            row_adaptors=row_adaptors,
        )
        evaluator = DownstreamEvaluator(
            features, config, log=lambda _: None, progress_path=progress
        )
        trained = []

        def train_one(tier, seed, *tables, adaptor=None):
            trained.append((tier, seed, adaptor))
            return None, 0.6, 0.7, 1

        monkeypatch.setattr(evaluator, "train_one", train_one)
        return evaluator.evaluate(representations), trained

    rows, trained = evaluate({"b": {"input_noise": 0.5}})
    from marc_keras.config.adaptor_setting import AdaptorSetting

    assert trained == [
        ("kar", 0, AdaptorSetting(input_dropout=0.2)),  # dcnv2: no vectors, setting unused
        ("kar", 0, AdaptorSetting(input_dropout=0.2)),
        ("kar", 0, AdaptorSetting(input_noise=0.5)),
    ]
    by_name = {row["name"]: row for row in rows}
    assert by_name["dcnv2"]["adaptor_setting"] is None
    assert by_name["b"]["adaptor_setting"]["input_noise"] == 0.5
    _, trained = evaluate({"b": {"weight_decay": 1e-3}})
    assert trained == [("kar", 0, AdaptorSetting(weight_decay=1e-3))]
