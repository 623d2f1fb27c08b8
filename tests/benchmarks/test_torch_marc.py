"""The training peer of benchmarks/train_peers.py computes what marc-keras computes."""

import sys
from pathlib import Path

import numpy as np
import pytest

import marc_keras
import keras
from marc_keras.pair_batches import PairBatches

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from torch_marc import TorchMARC
from train_peers import step_one_losses

WORDS = ("the", "a", "movie", "user", "likes", "film", "action", "comedy", "drama", "stars")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch
    import transformers

    tokenizer = marc_keras.TextTokenizer.from_vocabulary(WORDS, max_length=16)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocabulary_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("bert")
    transformers.BertModel(config).save_pretrained(directory)
    (directory / "tokenizer.json").write_text(tokenizer.to_json(), "utf-8")
    return directory


@pytest.mark.parametrize("hsic_rows", ["pairs", "distinct"])
def test_same_weights_give_the_same_losses(checkpoint, hsic_rows):
    settings = dict(
        lora_rank=2,
        compressed_dim=4,
        compression_hidden_units=(8,),
        matching_hidden_units=(4,),
        hsic_weight=0.5,
        hsic_rows=hsic_rows,
    )
    keras.utils.set_random_seed(0)
    model = marc_keras.MARC.from_preset(checkpoint, max_length=16, **settings)
    peer = TorchMARC(checkpoint, **settings).copy_from_keras(model)
    # Heads alike; LoRA on the same modules, in peft's form (A (r, d), B (d, r)).
    heads = [v for v in model.trainable_weights if "lora" not in v.path]
    peer_heads = [*peer.compression.parameters(), *peer.matching.parameters()]
    assert sum(p.numel() for p in peer_heads) == sum(int(np.prod(v.shape)) for v in heads)
    lora = [name for name, p in peer.named_parameters() if p.requires_grad and "lora" in name]
    assert len(lora) == 2 * 2 * 2 and all(".query." in n or ".value." in n for n in lora)
    rng = np.random.default_rng(1)

    users = [" ".join(rng.choice(WORDS, 3 + u)) for u in range(4) for _ in range(6)]
    items = [" ".join(rng.choice(WORDS, 1 + i % 3)) for i in range(24)]
    labels = rng.integers(0, 2, 24).astype("float32")
    batches = PairBatches(
        model.tokenize(users, items), labels, batch_size=12, seed=0, items_per_user=4
    )
    x, y = batches[0]
    ours, theirs = step_one_losses(model, peer, x, y)
    assert set(ours) == {"bce", "hsic_user", "hsic_item"}
    for name in ours:
        assert theirs[name] == pytest.approx(ours[name], rel=1e-5, abs=1e-7), name


def test_a_trained_keras_lora_is_refused(checkpoint):
    keras.utils.set_random_seed(0)
    model = marc_keras.MARC.from_preset(checkpoint, max_length=16, lora_rank=2, compressed_dim=4)
    for variable in model.backbone.trainable_weights:
        variable.assign(np.ones(variable.shape, "float32"))
    with pytest.raises(ValueError, match="LoRA is trained.*no peft equivalent"):
        TorchMARC(checkpoint, lora_rank=2, compressed_dim=4).copy_from_keras(model)
