"""A run's settings as data: `RunConfig` and its sections (standard library only).

Reading a config imports neither numpy, Keras, torch nor TensorFlow, so the
command line and tools can check a config file before any model loads.
"""

from marc_keras.config.downstream_config import DownstreamConfig
from marc_keras.config.run_config import DataSection, ModelSection, RunConfig, TrainingSection

__all__ = ["DataSection", "DownstreamConfig", "ModelSection", "RunConfig", "TrainingSection"]
