import pytest

from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.config.adaptor_setting import AdaptorSetting


@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluate.adaptor_input_dropout=-0.1", "evaluate.adaptor_input_dropout must be >= 0.0"),
        ("evaluate.adaptor_input_dropout=1.0", "evaluate.adaptor_input_dropout must be < 1.0 .*"),
        ("evaluate.adaptor_expert_dropout=1.5", "evaluate.adaptor_expert_dropout must be < 1.0"),
        ("evaluate.adaptor_input_noise=-0.5", "evaluate.adaptor_input_noise must be >= 0.0"),
        ("evaluate.adaptor_weight_decay=-1e-3", "evaluate.adaptor_weight_decay must be >= 0.0"),
        ("evaluate.adaptor_user_dim=0", "evaluate.adaptor_user_dim must be >= 1"),
        (
            "evaluate.row_adaptors={random={input_dropout=1.0}}",
            "evaluate.row_adaptors.random.input_dropout must be < 1.0 \\(a dropout rate",
        ),
        (
            "evaluate.row_adaptors={random={input_noise=-1}}",
            "evaluate.row_adaptors.random.input_noise must be >= 0.0",
        ),
        (
            "evaluate.row_adaptors={random={dropout=0.5}}",
            "unknown key 'evaluate.row_adaptors.random.dropout'; valid keys are input_dropout",
        ),
        ("evaluate.row_adaptors={random=0.5}", "evaluate.row_adaptors.random must be a table"),
        ("evaluate.row_adaptors=3", "'evaluate.row_adaptors' takes a table"),
    ],
)
def test_bad_adaptor_settings_name_the_key_and_range(override, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_file(None, [override])


def test_rows_get_their_own_setting_and_the_rest_the_generic_one(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        "[evaluate]\nadaptor_input_dropout = 0.2\nadaptor_weight_decay = 0.0\n"
        "[evaluate.row_adaptors.random]\ninput_noise = 0.5\nweight_decay = 1e-3\n"
    )
    config = RunConfig.from_file(path).evaluate
    assert config.adaptor_setting("random") == AdaptorSetting(input_noise=0.5, weight_decay=1e-3)
    # A row_adaptors table replaces the default one: other rows take the generic setting.
    assert config.adaptor_setting("frozen") == AdaptorSetting(input_dropout=0.2)
    assert config.adaptor_setting() == AdaptorSetting(input_dropout=0.2)
    overridden = RunConfig.from_file(path, ["evaluate.row_adaptors={}"]).evaluate
    assert overridden.adaptor_setting("random") == AdaptorSetting(input_dropout=0.2)


def test_defaults_are_the_grid_choices_and_all_off_is_reachable():
    config = DownstreamConfig()
    assert config.adaptor_setting("marc-c") == AdaptorSetting(input_dropout=0.5, weight_decay=1e-3)
    assert config.adaptor_setting("frozen-item-only") == AdaptorSetting()
    assert config.adaptor_setting("profile") == AdaptorSetting(input_dropout=0.2)
    assert DownstreamConfig().row_adaptors is not config.row_adaptors  # no shared mutable default
    off = RunConfig.from_file(
        None,
        [
            "evaluate.adaptor_input_dropout=0",
            "evaluate.adaptor_weight_decay=0",
            "evaluate.row_adaptors={}",
        ],
    ).evaluate
    assert off.adaptor_setting("random") == AdaptorSetting()


def test_json_round_trip_keeps_row_adaptors(tmp_path):
    config = RunConfig(evaluate=DownstreamConfig(row_adaptors={"pca-128": {"user_dim": 8}}))
    path = tmp_path / "config.json"
    import json

    path.write_text(json.dumps(config.to_dict()))
    assert RunConfig.from_file(path) == config
    assert RunConfig.from_file(path).evaluate.adaptor_setting("pca-128").user_dim == 8


def test_labels_and_strength_order():
    off = AdaptorSetting()
    assert off.label() == "none"
    both = AdaptorSetting(input_dropout=0.2, input_noise=0.5, weight_decay=1e-3, user_dim=16)
    assert both.label() == "drop0.2+noise0.5+wd0.001+udim16"
    ordered = sorted(
        [both, AdaptorSetting(input_dropout=0.5), off, AdaptorSetting(input_dropout=0.2)],
        key=AdaptorSetting.strength,
    )
    assert ordered == [
        off,
        AdaptorSetting(input_dropout=0.2),
        AdaptorSetting(input_dropout=0.5),
        both,
    ]
    assert AdaptorSetting(user_dim=16).strength() < AdaptorSetting(user_dim=8).strength()
    assert off.ranker_arguments() == {
        "adaptor_input_dropout": 0.0,
        "adaptor_expert_dropout": 0.0,
        "adaptor_input_noise": 0.0,
        "adaptor_weight_decay": 0.0,
        "user_adaptor_dim": None,
    }
