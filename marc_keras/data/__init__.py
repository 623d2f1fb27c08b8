"""Datasets, the bring-your-own interaction format and the KAR / MARC split."""

from marc_keras.data.interaction_data import InteractionData
from marc_keras.data.kar_split import KARSplit, SplitConfig
from marc_keras.data.movie_lens import MovieLens
from marc_keras.data.text_templates import TextTemplates

__all__ = ["InteractionData", "KARSplit", "MovieLens", "SplitConfig", "TextTemplates"]
