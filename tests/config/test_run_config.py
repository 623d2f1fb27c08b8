import json

import pytest

from marc_keras.config import RunConfig


def test_file_and_overrides_resolve_with_types(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        "[model]\nlora_rank = 4\ncompression_hidden_units = [64, 32]\n[training]\nepochs = 3\n"
    )
    config = RunConfig.from_file(
        path, ["training.epochs=5", "model.preset=/models/x", "data.seed=7"]
    )
    assert config.model.lora_rank == 4
    assert config.model.compression_hidden_units == (64, 32)
    assert config.training.epochs == 5 and config.data.seed == 7
    assert config.model.preset == "/models/x"
    assert config.training.batch_size == 32  # default kept


def test_json_config_round_trips(tmp_path):
    config = RunConfig.from_file(None, ["model.hsic_weight=0.1"])
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    assert RunConfig.from_file(path) == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainng.epochs=2", "unknown section 'trainng'.*Did you mean 'training'"),
        ("training.epoch=2", "unknown key 'training.epoch'.*Did you mean 'epochs'"),
        ("training.epochs=2.5", "'training.epochs' takes a whole number"),
        ("model.share_compression=1", "takes true or false"),
        ("model.compression_hidden_units=64", "takes a list"),
        ("epochs", "must look like section.key=value"),
        ("training.items_per_user=0", "training.items_per_user must be >= 1"),
        ("training.items_per_user=64", "items_per_user \\(64\\) exceeds training.batch_size"),
        ("model.frozen_prefix_layers=-1", "model.frozen_prefix_layers must be >= 0"),
        (
            'training.learning_rate_schedule="cosin"',
            "learning_rate_schedule must be one of.*Did you mean 'cosine'",
        ),
        ("training.warmup_steps=5", 'warmup_steps \\(5\\) needs.*= "cosine"'),
        ("training.head_warmup_epochs=-1", "training.head_warmup_epochs must be >= 0"),
        ('model.hsic_scale="sum"', "model.hsic_scale must be one of 'normalised', 'trace'"),
        ("model.hsic_bandwidth=0", "model.hsic_bandwidth must be > 0"),
        ('model.hsic_rows="users"', "model.hsic_rows must be one of 'pairs', 'distinct'"),
        ("training.cross_fit_folds=1", "training.cross_fit_folds must be >= 2 \\(K folds"),
        ("training.cross_fit_folds=3", "cross_fit_folds needs training.head_warmup_epochs > 0"),
        ('training.cross_fit_holdout="mean"', "cross_fit_holdout must be one of 'all-folds'"),
        ("training.head_warmup_samples=0", "training.head_warmup_samples must be >= 1"),
        ("training.head_warmup_samples=5000", "head_warmup_samples needs training.head_warmup_ep"),
        ("evaluate.cold_item_share=1.0", "evaluate.cold_item_share must be < 1"),
        ("evaluate.cold_item_share=-0.2", "evaluate.cold_item_share must be >= 0"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_file(None, [override])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        RunConfig.from_file(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nlora_rank = ")
    with pytest.raises(ValueError, match="broken.toml' does not parse"):
        RunConfig.from_file(broken)


def test_a_packaged_config_is_found_by_name_and_a_wrong_name_lists_them():
    from marc_keras.config.run_config import packaged_configs

    assert {"demo", "marc-scale", "compare-v2"} <= set(packaged_configs())
    assert RunConfig.from_file("demo") == RunConfig.from_file("configs/demo.toml")
    assert RunConfig.from_file("marc-scale.toml") == RunConfig.from_file("configs/marc-scale.toml")
    with pytest.raises(FileNotFoundError, match="not a packaged config name.*demo, gpu"):
        RunConfig.from_file("dmeo")
