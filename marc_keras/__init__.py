"""marc-keras: compact LLM user and item vectors for recommenders (MARC).

Importing this package selects the Keras torch backend (see `utils/backend_guard.py`).
The public names load on first use, and the layers register with Keras when
Keras is first imported: the command line's `--help` should not wait for
Keras, while `keras.saving.load_model` on a MARC `.keras` file works right
after `import marc_keras`.
"""

import importlib

from marc_keras.utils.backend_guard import ensure_torch_backend, register_layers_when_keras_loads

ensure_torch_backend()
register_layers_when_keras_loads()

__version__ = "0.1.0"

_PUBLIC = {
    "MARC": "marc_keras.models.marc",
    "MARCEncoder": "marc_keras.models.marc_encoder",
    "CompressionNetwork": "marc_keras.layers.compression_network",
    "LoRABackbone": "marc_keras.layers.lora_backbone",
    "MatchingNetwork": "marc_keras.layers.matching_network",
    "TokenPooling": "marc_keras.layers.token_pooling",
    "PairBatches": "marc_keras.pair_batches",
    "TextTokenizer": "marc_keras.text_tokenizer",
    "RunConfig": "marc_keras.config.run_config",
    "GenerativeConfig": "marc_keras.config.generative_config",
    "GenerativeRecommender": "marc_keras.generative.generative_recommender",
    "LatentDecoder": "marc_keras.generative.latent_decoder",
    "BeamSearchDecoder": "marc_keras.generative.beam_search_decoder",
    "L2DRun": "marc_keras.experiments.l2d_run",
    "MARCRun": "marc_keras.experiments.marc_run",
    "hsic": "marc_keras.losses.hsic",
}

__all__ = [
    "BeamSearchDecoder",
    "CompressionNetwork",
    "GenerativeConfig",
    "GenerativeRecommender",
    "L2DRun",
    "LatentDecoder",
    "LoRABackbone",
    "MARC",
    "MARCEncoder",
    "MARCRun",
    "MatchingNetwork",
    "PairBatches",
    "RunConfig",
    "TextTokenizer",
    "TokenPooling",
    "hsic",
]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'marc_keras' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
