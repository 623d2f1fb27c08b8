"""Ranker names (`evaluate.ranker`) -> CTR ranker classes and their protocol arguments."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from marc_keras.config import config_checks as check
from marc_keras.config.downstream_config import RANKERS

if TYPE_CHECKING:
    from marc_keras.config.adaptor_setting import AdaptorSetting
    from marc_keras.config.downstream_config import DownstreamConfig
    from marc_keras.ranking.field_ranker import FieldRanker

# Imported on demand: a run with one ranker loads no other ranker's layers.
RANKER_CLASSES = {
    "dcnv2": "marc_keras.ranking.dcn_v2_ranker:DCNv2Ranker",
    "dcnv1": "marc_keras.ranking.dcn_v1_ranker:DCNv1Ranker",
    "deepfm": "marc_keras.ranking.deep_fm_ranker:DeepFMRanker",
    "deepfm-kar": "marc_keras.ranking.deep_fm_ranker:DeepFMRanker",
    "xdeepfm": "marc_keras.ranking.x_deep_fm_ranker:XDeepFMRanker",
    "autoint": "marc_keras.ranking.auto_int_ranker:AutoIntRanker",
    "fibinet": "marc_keras.ranking.fibinet_ranker:FiBiNetRanker",
    "fignn": "marc_keras.ranking.fignn_ranker:FiGNNRanker",
    "din": "marc_keras.ranking.din_ranker:DINRanker",
}
if tuple(RANKER_CLASSES) != RANKERS:
    raise ImportError("RANKER_CLASSES must name exactly the config's RANKERS, in order.")
# Names whose class takes an architecture setting of its own: KAR's DeepFM keeps
# the vector fields out of the FM's pairwise term (FuxiCTR's, "deepfm", does not).
RANKER_SETTINGS = {"deepfm-kar": {"fm_vector_fields": False}}


def ranker_class(name: str) -> type[FieldRanker]:
    """The ranker class of a name in `RANKERS`.

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    check.choice("ranker", name, RANKERS)
    module, _, attribute = RANKER_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def ranker_settings(name: str) -> dict:
    """The architecture arguments a ranker name fixes (`RANKER_SETTINGS`), or none."""
    check.choice("ranker", name, RANKERS)
    return dict(RANKER_SETTINGS.get(name, {}))


def constructor_arguments(config: DownstreamConfig, adaptor: AdaptorSetting) -> dict:
    """Constructor arguments of `config.ranker` from an `[evaluate]` config and a row's adaptor.

    Every ranker takes the vector adaptors' settings and its name's own
    settings; DCNv2 also its cross rank, the one architecture setting the
    config holds.
    """
    arguments = {
        "num_experts": config.num_experts,
        **adaptor.ranker_arguments(),
        **ranker_settings(config.ranker),
    }
    if config.ranker == "dcnv2":
        arguments["cross_projection_dim"] = config.cross_projection_dim
    return arguments
