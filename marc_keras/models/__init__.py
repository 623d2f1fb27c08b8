"""MARC's Keras models."""

from marc_keras.models.marc import MARC
from marc_keras.models.marc_encoder import MARCEncoder

__all__ = ["MARC", "MARCEncoder"]
