"""MARC's Keras layers, and the feature-interaction layers of the CTR rankers."""

from marc_keras.layers.compressed_interaction_network import CompressedInteractionNetwork
from marc_keras.layers.compression_network import CompressionNetwork
from marc_keras.layers.cosine_scorer import CosineScorer
from marc_keras.layers.cross_network import CrossNetwork
from marc_keras.layers.factorization_machine import FactorizationMachine
from marc_keras.layers.graph_interaction import GraphInteraction
from marc_keras.layers.interacting_attention import InteractingAttention
from marc_keras.layers.item_id_index import ItemIdIndex
from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.layers.matching_network import MatchingNetwork
from marc_keras.layers.senet_bilinear import SenetBilinear
from marc_keras.layers.target_attention import TargetAttention
from marc_keras.layers.token_pooling import TokenPooling

__all__ = [
    "CompressedInteractionNetwork",
    "CompressionNetwork",
    "CosineScorer",
    "CrossNetwork",
    "FactorizationMachine",
    "GraphInteraction",
    "InteractingAttention",
    "ItemIdIndex",
    "LoRABackbone",
    "MatchingNetwork",
    "SenetBilinear",
    "TargetAttention",
    "TokenPooling",
]
