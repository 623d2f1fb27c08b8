import pytest

from marc_keras.baselines.method_registry import KINDS, METHODS, resolve_methods
from marc_keras.config import ModelSection, RunConfig
from marc_keras.models.marc import OBJECTIVES

ISSUE_ROWS = [
    "frozen",
    "pca",
    "ae",
    "vae",
    "mrl",
    "larr",
    "bahe",
    "ese",
    "marc-c",
    "marc-o",
    "marc-c-cross-fit",
    "marc-no-hsic",
    "marc-no-hsic-cross-fit",
    "marc-no-mn",
    "marc-no-ei",
    "marc-cs",
]


def test_every_method_of_the_comparison_is_registered():
    assert list(METHODS) == ISSUE_ROWS
    assert all(method.kind in KINDS for method in METHODS.values())


def test_trained_methods_are_valid_model_settings():
    for method in METHODS.values():
        if method.kind == "trained":
            config = RunConfig.from_dict(
                {
                    "model": {
                        key: list(value) if isinstance(value, tuple) else value
                        for key, value in method.model.items()
                    }
                }
            )
            assert isinstance(config.model, ModelSection)
            assert config.model.objective in OBJECTIVES


def test_marc_c_and_marc_o_share_one_training_run():
    marc_c, marc_o, cross_fit, no_hsic = resolve_methods(
        ["marc-c", "marc-o", "marc-c-cross-fit", "marc-no-hsic"]
    )
    assert marc_c.run_name == marc_o.run_name == cross_fit.run_name == "marc"
    no_hsic_cross_fit = resolve_methods(["marc-no-hsic-cross-fit"])[0]
    assert no_hsic.run_name == no_hsic_cross_fit.run_name == "marc-no-hsic"
    assert no_hsic_cross_fit.model == no_hsic.model and no_hsic_cross_fit.vectors == "cross-fit"
    assert (marc_c.vectors, marc_o.vectors, cross_fit.vectors) == (
        "compressed",
        "original",
        "cross-fit",
    )
    assert resolve_methods(["mrl"])[0].model == {"objective": "mrl", "hsic_weight": 0.0}


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"Unknown method\(s\) \['mrl2'\]; valid methods are: frozen, pca, ae"
    ):
        resolve_methods(["marc-c", "mrl2"])
    with pytest.raises(ValueError, match="more than once"):
        resolve_methods(["pca", "pca"])
