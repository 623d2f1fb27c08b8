"""MARC's Keras layers."""

from marc_keras.layers.compression_network import CompressionNetwork
from marc_keras.layers.cosine_scorer import CosineScorer
from marc_keras.layers.item_id_index import ItemIdIndex
from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.layers.matching_network import MatchingNetwork
from marc_keras.layers.token_pooling import TokenPooling

__all__ = [
    "CompressionNetwork",
    "CosineScorer",
    "ItemIdIndex",
    "LoRABackbone",
    "MatchingNetwork",
    "TokenPooling",
]
