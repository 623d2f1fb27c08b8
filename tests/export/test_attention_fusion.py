import collections

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper

from marc_keras.export.attention_fusion import fuse_attention
from marc_keras.export.onnx_exporter import OnnxExporter, random_token_batch

OTHER_SHAPES = ((4, 7), (1, 12), (6, 3), (3, 12))


@pytest.fixture(scope="module")
def basic_graphs(make_tiny_encoder, tmp_path_factory):
    """The unfused ("basic") graphs of the tiny BERT and the tiny Llama encoders."""
    graphs = {}
    for architecture in ("bert", "llama"):
        encoder = make_tiny_encoder(architecture=architecture)
        bundle = tmp_path_factory.mktemp("basic") / architecture
        OnnxExporter(encoder).export(bundle, optimize="basic")
        graphs[architecture] = (onnx.load(str(bundle / "model.onnx")), encoder)
    return graphs


def _copy(model):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _run(model, tokens, outputs=("compressed", "original")):
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(list(outputs), tokens)


def _ops(model):
    return collections.Counter(node.op_type for node in model.graph.node)


def test_every_block_of_a_bert_encoder_becomes_one_attention_node(basic_graphs):
    basic, encoder = basic_graphs["bert"]
    fused = _copy(basic)
    assert fuse_attention(fused) == 2
    onnx.checker.check_model(fused, full_check=True)
    ops = _ops(fused)
    assert ops["Attention"] == 2
    assert "Softmax" not in ops and "Transpose" not in ops
    # Q, K and V share one packed (d, 3d) weight per block.
    packed = [t for t in fused.graph.initializer if t.name.endswith("qkv_weight")]
    assert [tuple(t.dims) for t in packed] == [(16, 48), (16, 48)]
    rng = np.random.default_rng(11)
    vocabulary = encoder.backbone.backbone.vocabulary_size
    for shape in OTHER_SHAPES:
        tokens = random_token_batch(shape, vocabulary, 0, rng)
        for expected, actual in zip(_run(basic, tokens), _run(fused, tokens)):
            np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_decoder_blocks_are_left_alone(basic_graphs):
    basic, _ = basic_graphs["llama"]
    fused = _copy(basic)
    assert fuse_attention(fused) == 0
    assert fused == basic


def test_a_mask_other_than_the_padding_mask_input_is_not_fused(basic_graphs):
    model = _copy(basic_graphs["bert"][0])
    for value in model.graph.input:
        if value.name == "padding_mask":
            value.name = "attention_mask"
    for node in model.graph.node:
        node.input[:] = ["attention_mask" if n == "padding_mask" else n for n in node.input]
    assert fuse_attention(model) == 0


def test_a_block_whose_scores_are_read_elsewhere_is_kept(basic_graphs):
    basic, encoder = basic_graphs["bert"]
    model = _copy(basic)
    first_softmax = next(node for node in model.graph.node if node.op_type == "Softmax")
    model.graph.output.append(
        helper.make_tensor_value_info(first_softmax.output[0], onnx.TensorProto.FLOAT, None)
    )
    assert fuse_attention(model) == 1
    tokens = random_token_batch(
        (3, 9), encoder.backbone.backbone.vocabulary_size, 0, np.random.default_rng(2)
    )
    expected = _run(basic, tokens)
    actual = _run(model, tokens)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, atol=1e-5)
