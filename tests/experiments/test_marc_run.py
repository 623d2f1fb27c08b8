import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import keras
from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun, build_split, learning_rate, tokenize_pairs
from marc_keras.models.cross_fitted_heads import CrossFittedHeads
from marc_keras.utils.atomic_files import write_atomically


@pytest.fixture
def tiny_config(tiny_preset, ml1m_dir):
    return RunConfig.from_file(
        None,
        [
            f'model.preset="{tiny_preset}"',
            f'data.data_dir="{ml1m_dir}"',
            "model.lora_rank=2",
            "model.max_length=24",
            "model.compressed_dim=8",
            "model.compression_hidden_units=[16]",
            "model.matching_hidden_units=[16]",
            "training.train_samples=64",
            "training.validation_samples=32",
            "training.test_samples=32",
            "training.batch_size=16",
        ],
    )


def test_fit_writes_a_complete_run_and_a_rerun_only_reports(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    metrics = MARCRun.open(run_dir, tiny_config).fit(log=lambda _: None, verbose=0)
    for name in (
        "config.json",
        "tokens.npz",
        "history.csv",
        "model.keras",
        "encoder.keras",
        "lora.lora.h5",
        "metrics.json",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".partial-*"))
    assert metrics["test"]["pairs"] == 32 and 0.0 <= metrics["test"]["auc"] <= 1.0
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    encoder = keras.saving.load_model(run_dir / "encoder.keras")
    assert encoder.encode(["Female, age 25-34. Recently watched: nothing yet."])[
        "compressed"
    ].shape == (1, 8)
    model_mtime = (run_dir / "model.keras").stat().st_mtime
    again = MARCRun.open(run_dir, tiny_config).fit(log=lambda _: None, verbose=0)
    assert again == json.loads(json.dumps(metrics))
    assert (run_dir / "model.keras").stat().st_mtime == model_mtime


@pytest.mark.parametrize("objective", ["contrastive", "aoe", "cosine"])
def test_objectives_without_bce_report_their_own_loss(tiny_config, tmp_path, objective):
    config = tiny_config.replace(
        model=dataclasses.replace(tiny_config.model, objective=objective, hsic_weight=0.0)
    )
    metrics = MARCRun.open(tmp_path / "run", config).fit(log=lambda _: None, verbose=0)
    assert sorted(metrics["test"]) == sorted(["auc", objective, "pairs"])
    assert np.isfinite(metrics["test"][objective])


def test_tokens_are_sampled_deterministically(tiny_config, tmp_path):
    for name in ("a", "b"):
        MARCRun.open(tmp_path / name, tiny_config).fit(log=lambda _: None, verbose=0)
    with np.load(tmp_path / "a" / "tokens.npz") as a, np.load(tmp_path / "b" / "tokens.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_a_directory_holding_another_run_is_refused(tiny_config, tmp_path):
    MARCRun.open(tmp_path, tiny_config)
    (tmp_path / "history.csv").write_text("epoch,loss\n")  # it started training
    other = tiny_config.replace(training=tiny_config.training.__class__(epochs=3))
    with pytest.raises(ValueError, match="holds another run.*training.epochs"):
        MARCRun.open(tmp_path, other)
    stranger = tmp_path / "not-a-run"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a marc-keras run"):
        MARCRun.open(stranger, tiny_config)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def failing(path):
        Path(path).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _trained_weights(run_dir):
    model = keras.saving.load_model(run_dir / "model.keras")
    return [np.asarray(variable) for variable in model.trainable_variables]


def _fit_killed_after_step_seven(run_dir, config, monkeypatch):
    """Runs `fit` until a kill right after global step 7; later fits run normally."""
    from marc_keras.step_checkpoint import StepCheckpoint

    step_end = StepCheckpoint.on_train_batch_end

    def killed_after_step_seven(self, batch, logs=None):
        step_end(self, batch, logs)
        if self.global_step == 7:
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(StepCheckpoint, "on_train_batch_end", killed_after_step_seven)
        with pytest.raises(KeyboardInterrupt):
            MARCRun.open(run_dir, config).fit(log=lambda _: None, verbose=0)


@pytest.mark.parametrize(
    "schedule",
    [{}, {"learning_rate_schedule": "cosine", "warmup_steps": 2}, {"head_warmup_epochs": 2}],
    ids=["constant", "cosine", "head-warmup"],
)
def test_a_fit_killed_mid_epoch_resumes_at_its_checkpoint_and_matches_an_uninterrupted_fit(
    tiny_config, tmp_path, monkeypatch, schedule
):
    # 64 pairs in batches of 16: 4 steps an epoch, 2 epochs, a checkpoint every 3 steps.
    # The cosine schedule must continue from the saved step, not restart; the
    # warmed-up heads come from the checkpoint, not from a second warm-up.
    config = tiny_config.replace(
        training=dataclasses.replace(tiny_config.training, epochs=2, checkpoint_steps=3, **schedule)
    )
    MARCRun.open(tmp_path / "whole", config).fit(log=lambda _: None, verbose=0)

    run_dir = tmp_path / "resumed"
    _fit_killed_after_step_seven(run_dir, config, monkeypatch)
    # Saved at global step 6 = step 2 of the second epoch; older weights are gone.
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert {key: state[key] for key in ("epoch", "step", "global_step", "weights")} == {
        "epoch": 1,
        "step": 2,
        "global_step": 6,
        "weights": "step-000000006.npz",
    }
    assert state["early_stopping"]["best_epoch"] == 0 and state["best_weights"] == "best-00000.npz"
    assert sorted(path.name for path in (run_dir / "checkpoint").iterdir()) == [
        "best-00000.npz",
        "state.json",
        state["weights"],
    ]

    lines = []
    metrics = MARCRun.open(run_dir, config).fit(log=lines.append, verbose=0)
    assert metrics["resumed_from_step"] == 6
    assert not any("warming up" in line for line in lines)
    assert [line for line in lines if "resuming from" in line][0].endswith(
        "epoch 2, step 2 (6 steps trained)"
    )
    assert not (run_dir / "checkpoint").exists()
    # Same data order, weights and optimizer state: the same model as the run never killed.
    for resumed, whole in zip(
        _trained_weights(run_dir), _trained_weights(tmp_path / "whole"), strict=True
    ):
        np.testing.assert_allclose(resumed, whole, atol=1e-5)
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1"]


def test_user_grouped_training_on_a_frozen_prefix_resumes_like_an_uninterrupted_fit(
    tiny_config, tmp_path, monkeypatch
):
    # Chunks of up to 4 of a user's pairs; LoRA trains only in the tiny
    # backbone's second block, on cached first-block states. Killed in the
    # first of two epochs, so the resumed run needs two `fit` calls.
    config = tiny_config.replace(
        model=dataclasses.replace(tiny_config.model, frozen_prefix_layers=1),
        training=dataclasses.replace(
            tiny_config.training,
            epochs=2,
            checkpoint_steps=3,
            items_per_user=4,
            train_samples=256,
        ),
    )
    lines = []
    whole = MARCRun.open(tmp_path / "whole", config).fit(log=lines.append, verbose=0)
    assert any("caching every training text's hidden states" in line for line in lines)
    assert whole["timings"]["batches_s"] > 0

    run_dir = tmp_path / "resumed"
    _fit_killed_after_step_seven(run_dir, config, monkeypatch)
    metrics = MARCRun.open(run_dir, config).fit(log=lambda _: None, verbose=0)
    assert metrics["resumed_from_step"] == 6
    assert metrics["test"]["auc"] == pytest.approx(whole["test"]["auc"], abs=1e-5)
    for resumed, uninterrupted in zip(
        _trained_weights(run_dir), _trained_weights(tmp_path / "whole"), strict=True
    ):
        np.testing.assert_allclose(resumed, uninterrupted, atol=1e-5)


def test_head_warmup_trains_the_heads_on_frozen_vectors_and_reports_it(tiny_config, tmp_path):
    config = tiny_config.replace(
        training=dataclasses.replace(tiny_config.training, head_warmup_epochs=3)
    )
    lines = []
    metrics = MARCRun.open(tmp_path / "run", config).fit(log=lines.append, verbose=0)
    assert any("warming up the heads" in line for line in lines)
    warmup = metrics["head_warmup"]
    assert 1 <= warmup["epochs"] == len(warmup["validation_auc_per_epoch"]) <= 3
    assert warmup["validation_auc"] == max(warmup["validation_auc_per_epoch"])
    assert warmup == json.loads((tmp_path / "run" / "head-warmup.json").read_text())
    assert metrics["timings"]["head_warmup_s"] >= warmup["fit_s"] > 0
    # The fine-tuning epochs after it are the run's own: one, as configured.
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 2


def test_head_warmup_samples_train_on_their_own_pairs_from_the_frozen_vectors_file(
    tiny_config, tmp_path
):
    training = tiny_config.training
    config = tiny_config.replace(
        training=dataclasses.replace(
            training, head_warmup_epochs=2, head_warmup_samples=3 * training.train_samples
        )
    )
    run = MARCRun.open(tmp_path / "run", config)
    warmup = run.fit(log=lambda _: None, verbose=0)["head_warmup"]
    assert warmup["pairs"] == 3 * training.train_samples
    assert (tmp_path / "run" / "frozen-vectors.npz").is_file()
    # The warm-up's frozen pass is the one evaluate reads: no second encoding.
    stamp = (tmp_path / "run" / "frozen-vectors.npz").stat().st_mtime_ns
    vectors = run.encode_vectors(verbose=0)
    assert (tmp_path / "run" / "frozen-vectors.npz").stat().st_mtime_ns == stamp
    # Its vectors are the frozen backbone's, as the token path computes them.
    split = build_split(config)
    pairs = split.sample("train", 4, seed=training.seed)
    tokens = tokenize_pairs(run.build_model(lora_rank=0).backbone, split, pairs)
    model = run.build_model()
    ((from_tokens,), _) = run._frozen_token_vectors(model, (tokens,), None)
    from_file = CrossFittedHeads.pair_vectors(*vectors["frozen"], pairs)
    for name, values in from_tokens.items():
        np.testing.assert_allclose(from_file[name], values, atol=1e-5)


def test_cross_fit_folds_add_cross_fitted_vectors_once(tiny_config, tmp_path):
    config = tiny_config.replace(
        training=dataclasses.replace(tiny_config.training, head_warmup_epochs=1, cross_fit_folds=2)
    )
    run = MARCRun.open(tmp_path / "run", config)
    run.fit(log=lambda _: None, verbose=0)
    vectors = run.encode_vectors(verbose=0, include_frozen=False)
    (user_ids, users), (item_ids, items) = vectors["marc-c-cross-fit"]
    np.testing.assert_array_equal(user_ids, vectors["marc-c"][0][0])
    assert users.shape == (len(user_ids), 8) and items.shape == (len(item_ids), 8)
    assert np.isfinite(users).all() and not np.allclose(users, vectors["marc-c"][0][1])
    written = run.cross_fit_vectors_path.stat().st_mtime_ns
    again = run.encode_vectors(verbose=0, include_frozen=False)["marc-c-cross-fit"]
    np.testing.assert_array_equal(again[0][1], users)
    assert run.cross_fit_vectors_path.stat().st_mtime_ns == written


def test_cosine_learning_rate_warms_up_linearly_then_decays_to_zero(tiny_config):
    training = dataclasses.replace(
        tiny_config.training, learning_rate=1e-3, learning_rate_schedule="cosine", warmup_steps=10
    )
    schedule = learning_rate(training, total_steps=110)
    steps = np.array([0, 5, 10, 35, 60, 110])
    # Linear to the peak over 10 steps, then 0.5 * peak * (1 + cos(pi * t / 100)).
    after_warmup = np.clip(steps - 10, 0, None) / 100
    expected = np.where(steps < 10, 1e-3 * steps / 10, 0.5e-3 * (1 + np.cos(np.pi * after_warmup)))
    got = [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert (
        learning_rate(tiny_config.training, total_steps=110) == tiny_config.training.learning_rate
    )
    with pytest.raises(ValueError, match="warmup_steps \\(10\\) must be below the run's 10"):
        learning_rate(training, total_steps=10)


def test_head_warmups_sharing_a_vector_cache_encode_each_text_once(tiny_config, tmp_path):
    config = tiny_config.replace(
        training=dataclasses.replace(tiny_config.training, head_warmup_epochs=2)
    )
    no_hsic = config.replace(model=dataclasses.replace(config.model, hsic_weight=0.0))
    cache = tmp_path / "cache"

    def fit(name, run_config, **fit_options):
        run = MARCRun.open(tmp_path / name, run_config)
        return run.fit(log=lambda _: None, verbose=0, **fit_options)

    first = fit("marc", config, frozen_vector_cache=cache)["head_warmup"]
    # Validation pairs share item texts with training pairs: those are read back.
    assert first["encoded_texts"] > 0 and first["cached_texts"] > 0
    # Another method on the same pairs: its texts were all encoded by the first run.
    cached = fit("no-hsic", no_hsic, frozen_vector_cache=cache)
    assert cached["head_warmup"]["encoded_texts"] == 0
    assert cached["head_warmup"]["cached_texts"] == first["cached_texts"] + first["encoded_texts"]
    # Reading the cache instead of encoding changes nothing the run learns.
    uncached = fit("no-hsic-uncached", no_hsic)
    assert "cached_texts" not in uncached["head_warmup"]
    np.testing.assert_allclose(
        cached["head_warmup"]["validation_auc_per_epoch"],
        uncached["head_warmup"]["validation_auc_per_epoch"],
        atol=1e-6,
    )
    np.testing.assert_allclose(cached["test"]["auc"], uncached["test"]["auc"], atol=1e-6)
