import json

import pytest

from marc_keras.config.generative_config import FIT_SECTIONS, GenerativeConfig


def test_defaults():
    config = GenerativeConfig.from_file(None)
    assert config == GenerativeConfig()
    data, model, training, decoding = config.data, config.model, config.training, config.decoding
    assert (data.dataset, data.history_length, data.positives_only) == ("movielens", 10, False)
    assert (data.train_samples, data.memory_samples) == (1024, None)
    assert (data.validation_users, data.test_users, data.seed) == (300, 300, 42)
    assert data.instruction.startswith("Given a list of movies the user has watched before")
    assert (model.preset, model.lora_rank, model.lora_alpha, model.max_length) == (
        None,
        8,
        16.0,
        512,
    )
    assert (training.batch_size, training.epochs, training.learning_rate) == (8, 1, 1e-3)
    assert (training.threads, training.checkpoint_steps) == (None, 25)
    assert decoding.beam_width == 10
    assert decoding.length_penalties == (0.0,)
    assert decoding.local_sizes == (16, 64, 256, 1024)
    assert decoding.latency_batch_sizes == (1, 16)
    assert list(config.to_dict()) == ["data", "model", "training", "decoding"]
    assert set(FIT_SECTIONS) == {"data", "model", "training"}


def test_file_and_overrides_resolve_with_types(tmp_path):
    path = tmp_path / "l2d.toml"
    path.write_text(
        '[data]\nhistory_length = 5\nmemory_samples = 4096\n[model]\npreset = "/models/lm"\n'
        "lora_alpha = 32\n[decoding]\nlocal_sizes = [8, 32]\nbeam_width = 20\n"
    )
    config = GenerativeConfig.from_file(
        path, ["decoding.beam_width=5", "training.epochs=3", "data.positives_only=true"]
    )
    assert config.data.history_length == 5 and config.data.memory_samples == 4096
    assert config.data.positives_only is True
    assert config.model.preset == "/models/lm"
    assert config.model.lora_alpha == 32.0 and isinstance(config.model.lora_alpha, float)
    assert config.decoding.local_sizes == (8, 32)
    assert config.decoding.beam_width == 5  # the override wins over the file
    assert GenerativeConfig.from_file(
        path, ["decoding.length_penalties=[0, 1.0]"]
    ).decoding.length_penalties == (0.0, 1.0)
    assert config.training.epochs == 3
    assert config.training.batch_size == 8 and config.model.lora_rank == 8  # defaults kept


def test_json_round_trip(tmp_path):
    config = GenerativeConfig.from_file(None, ["decoding.local_sizes=[4]", "data.seed=3"])
    path = tmp_path / "l2d.json"
    path.write_text(json.dumps(config.to_dict()))
    assert GenerativeConfig.from_file(path) == config


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "decoding.local_size=[4]",
            "unknown key 'decoding.local_size'.*Did you mean 'local_sizes'",
        ),
        ("decodng.beam_width=2", "unknown section 'decodng'.*Did you mean 'decoding'"),
        ("data.history_lenght=3", "Did you mean 'history_length'"),
        (
            "data.memory_samples=512",
            r"data.memory_samples \(512\) must be at least data.train_samples \(1024\)",
        ),
        ("decoding.local_sizes=[]", "decoding.local_sizes must not be empty"),
        ("decoding.local_sizes=[16, 0]", r"decoding.local_sizes must hold numbers >= 1"),
        ("decoding.local_sizes=64", "'decoding.local_sizes' takes a list"),
        ("decoding.local_sizes=[1.5]", "'decoding.local_sizes' takes a whole number"),
        ("decoding.length_penalties=[]", "decoding.length_penalties must not be empty"),
        ("decoding.length_penalties=[1, -0.5]", "decoding.length_penalties must be >= 0"),
        ("data.dataset='files'", "needs data.interactions and data.items"),
        ("data.dataset='movielen'", "Did you mean 'movielens'"),
        ("model.lora_alpha=0", "model.lora_alpha"),
        ("training.threads=0", "training.threads"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        GenerativeConfig.from_file(None, [override])


def test_memory_samples_may_equal_or_exceed_train_samples():
    config = GenerativeConfig.from_file(None, ["data.train_samples=64", "data.memory_samples=64"])
    assert config.data.memory_samples == config.data.train_samples == 64
    with pytest.raises(ValueError, match=r"\(63\) must be at least data.train_samples \(64\)"):
        GenerativeConfig.from_file(None, ["data.train_samples=64", "data.memory_samples=63"])


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "l2d.toml"
    path.write_text("[decoding]\nlocal_sizes = [0]\n")
    with pytest.raises(ValueError, match="l2d.toml: decoding.local_sizes must hold numbers >= 1"):
        GenerativeConfig.from_file(path)
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        GenerativeConfig.from_file(tmp_path / "missing.toml")
