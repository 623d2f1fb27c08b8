"""Downstream evaluation: CTR features, the DCNv2 ranker, metrics and baselines."""

from marc_keras.evaluation.autoencoder_projection import AutoencoderProjection
from marc_keras.evaluation.dcn_v2_ranker import DCNv2Ranker
from marc_keras.evaluation.downstream_evaluator import DownstreamConfig, DownstreamEvaluator
from marc_keras.evaluation.expert_adaptor import ExpertAdaptor
from marc_keras.evaluation.pca_projection import PCAProjection
from marc_keras.evaluation.ranking_features import RankingFeatures
from marc_keras.evaluation.vae_projection import VAEProjection

__all__ = [
    "AutoencoderProjection",
    "DCNv2Ranker",
    "DownstreamConfig",
    "DownstreamEvaluator",
    "ExpertAdaptor",
    "PCAProjection",
    "RankingFeatures",
    "VAEProjection",
]
