"""marc-keras: compact LLM user and item vectors for recommenders (MARC).

Importing this package selects the Keras torch backend (see `backend_guard`).
"""

from marc_keras.backend_guard import ensure_torch_backend

ensure_torch_backend()

from marc_keras import layers, losses, models  # noqa: E402
from marc_keras.layers import CompressionNetwork, LoRABackbone, MatchingNetwork, TokenPooling  # noqa: E402
from marc_keras.losses import hsic  # noqa: E402
from marc_keras.models import MARC, MARCEncoder  # noqa: E402
from marc_keras.text_tokenizer import TextTokenizer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MARC",
    "CompressionNetwork",
    "LoRABackbone",
    "MARCEncoder",
    "MatchingNetwork",
    "TextTokenizer",
    "TokenPooling",
    "hsic",
    "layers",
    "losses",
    "models",
]
