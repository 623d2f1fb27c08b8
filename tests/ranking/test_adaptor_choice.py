import pytest

from marc_keras.config.adaptor_setting import AdaptorSetting
from marc_keras.ranking.adaptor_choice import choose_adaptor_settings

OFF, DROP, NOISE = {}, {"input_dropout": 0.5}, {"input_noise": 0.5}


def _cells(row, values):
    return [
        {"row": row, "tier": tier, "setting": setting, "validation_auc": auc}
        for (tier, setting), auc in values
    ]


def test_best_mean_over_tiers_wins():
    cells = _cells(
        "frozen",
        [
            (("kar", OFF), 0.780), (("full", OFF), 0.800),
            (("kar", DROP), 0.786), (("full", DROP), 0.801),
            # The best on kar alone, but not on the mean of both tiers.
            (("kar", NOISE), 0.790), (("full", NOISE), 0.790),
        ],
    )  # fmt: skip
    setting, grid = choose_adaptor_settings(cells, ["kar", "full"])["frozen"]
    assert setting == AdaptorSetting(input_dropout=0.5)
    assert grid == pytest.approx({"none": 0.790, "drop0.5": 0.7935, "noise0.5": 0.790})
    assert choose_adaptor_settings(cells, ["kar"])["frozen"][0] == AdaptorSetting(input_noise=0.5)


def test_ties_go_to_the_weaker_setting_and_rows_are_chosen_alike():
    cells = _cells("random", [(("kar", OFF), 0.7800), (("kar", DROP), 0.7804)])
    cells += _cells("pca-128", [(("kar", OFF), 0.7800), (("kar", DROP), 0.7810)])
    chosen = choose_adaptor_settings(cells, ["kar"], tolerance=0.0005)
    assert chosen["random"][0] == AdaptorSetting()  # within the tolerance: the weaker
    assert chosen["pca-128"][0] == AdaptorSetting(input_dropout=0.5)


def test_settings_missing_a_tier_do_not_compete():
    cells = _cells("profile", [(("kar", OFF), 0.78), (("full", OFF), 0.79), (("kar", DROP), 0.9)])
    setting, grid = choose_adaptor_settings(cells, ["kar", "full"])["profile"]
    assert setting == AdaptorSetting() and list(grid) == ["none"]
