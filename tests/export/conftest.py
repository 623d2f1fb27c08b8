"""Tiny MARC encoders (BERT with mean pooling, Llama with last-token pooling) and their bundles."""

import numpy as np
import pytest

import marc_keras
from marc_keras.export.onnx_exporter import OnnxExporter


def _perturb_lora(backbone, seed):
    # Fresh LoRA has B = 0, so merging would be a no-op; real adapters are not.
    rng = np.random.default_rng(seed)
    for variable in backbone.backbone.weights:
        if variable.name == "lora_kernel_b":
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))


@pytest.fixture(scope="module")
def make_tiny_encoder(tiny_tokenizer_module):
    import keras
    import keras_hub

    def make(architecture="bert", pooling="mean", seed=0):
        keras.utils.set_random_seed(seed)
        common = dict(vocabulary_size=tiny_tokenizer_module.vocabulary_size, num_layers=2, hidden_dim=16, intermediate_dim=32)
        if architecture == "bert":
            hub = keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=32, **common)
        else:
            hub = keras_hub.models.LlamaBackbone(num_query_heads=2, num_key_value_heads=1, **common)
        backbone = marc_keras.LoRABackbone(hub, tokenizer=tiny_tokenizer_module, lora_rank=2, pooling=pooling)
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
    bundle = tmp_path_factory.mktemp("bundles") / "tiny-fp32"
    OnnxExporter(encoder, source={"test": "tiny"}).export(bundle)
    return bundle, encoder
