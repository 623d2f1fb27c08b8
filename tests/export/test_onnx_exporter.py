import json

import numpy as np
import onnx
import onnxruntime
import pytest

from marc_keras.export.bundle_manifest import BundleManifest
from marc_keras.export.onnx_exporter import (
    OnnxExporter,
    ParityCheck,
    random_token_batch,
    row_cosines,
)

OTHER_SHAPES = ((4, 7), (1, 12), (6, 3))


def _onnx_outputs(bundle, tokens):
    session = onnxruntime.InferenceSession(
        str(bundle / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return dict(zip(("compressed", "original"), session.run(["compressed", "original"], tokens)))


def _compare_at_other_shapes(bundle, encoder, compare):
    rng = np.random.default_rng(7)
    for shape in OTHER_SHAPES:
        tokens = random_token_batch(shape, encoder.backbone.backbone.vocabulary_size, 0, rng)
        expected = encoder.predict_on_batch(tokens)
        actual = _onnx_outputs(bundle, tokens)
        for name in ("compressed", "original"):
            compare(actual[name], np.asarray(expected[name]))


def test_fp32_bundle_matches_keras_at_shapes_other_than_the_exports(tiny_bundle):
    bundle, encoder = tiny_bundle
    _compare_at_other_shapes(
        bundle, encoder, lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4)
    )
    manifest = BundleManifest.load(bundle)
    assert manifest.outputs == {"compressed": 8, "original": 16}
    assert manifest.pooling == "mean" and manifest.max_length == 12 and manifest.precision == "fp32"
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}
    assert manifest.source == {"test": "tiny", "lora_rank": 2}
    assert max(manifest.verification["max_abs_error"].values()) <= 1e-4
    assert all(shape != [2, 16] for shape in manifest.verification["shapes"])
    model = onnx.load(str(bundle / "model.onnx"))
    assert [value.name for value in model.graph.output] == ["compressed", "original"]
    assert [value.name for value in model.graph.input] == ["token_ids", "padding_mask"]
    # Einsum projections were rewritten as MatMul; the LoRA factors were merged away.
    assert "Einsum" not in {node.op_type for node in model.graph.node}
    assert not [tensor.name for tensor in model.graph.initializer if "lora" in tensor.name]


def test_lora_is_merged_not_dropped(tiny_bundle, make_tiny_encoder):
    bundle, encoder = tiny_bundle
    without_lora = make_tiny_encoder()
    for variable in without_lora.backbone.backbone.weights:
        if variable.name == "lora_kernel_b":
            variable.assign(np.zeros(variable.shape, "float32"))
    tokens = random_token_batch(
        (3, 9), encoder.backbone.backbone.vocabulary_size, 0, np.random.default_rng(3)
    )
    exported = _onnx_outputs(bundle, tokens)["original"]
    assert (
        np.abs(exported - np.asarray(without_lora.predict_on_batch(tokens)["original"])).max()
        > 1e-3
    )


def test_decoder_with_last_token_pooling_exports_and_matches(make_tiny_encoder, tmp_path):
    encoder = make_tiny_encoder(architecture="llama", pooling="last")
    manifest = OnnxExporter(encoder).export(tmp_path / "llama")
    assert manifest.pooling == "last"
    _compare_at_other_shapes(
        tmp_path / "llama", encoder, lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4)
    )


def test_int8_bundle_is_within_its_documented_cosine(make_tiny_encoder, tmp_path):
    encoder = make_tiny_encoder()
    manifest = OnnxExporter(encoder).export(tmp_path / "int8", precision="int8")
    assert min(manifest.verification["min_cosine"].values()) >= ParityCheck().int8_min_cosine
    # 7-bit weights: no u8 x s8 pair sum can saturate AVX2's int16 VPMADDUBSW,
    # so this holds on AVX2-only CPUs as on VNNI ones.
    assert manifest.quantization["reduce_range"] is True
    assert BundleManifest.load(tmp_path / "int8").quantization == manifest.quantization
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
    _compare_at_other_shapes(
        tmp_path / "int8",
        encoder,
        lambda a, b: np.testing.assert_array_less(0.97, row_cosines(a, b)),
    )


def test_fp16_bundle_keeps_float32_io_and_norms(make_tiny_encoder, tmp_path):
    encoder = make_tiny_encoder()
    OnnxExporter(encoder).export(tmp_path / "fp16", precision="fp16")
    model = onnx.load(str(tmp_path / "fp16" / "model.onnx"))
    assert {value.type.tensor_type.elem_type for value in model.graph.output} == {
        onnx.TensorProto.FLOAT
    }
    float16_weights = [
        t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16
    ]
    assert float16_weights
    _compare_at_other_shapes(
        tmp_path / "fp16",
        encoder,
        lambda a, b: np.testing.assert_array_less(0.995, row_cosines(a, b)),
    )


def test_a_failed_parity_check_writes_no_bundle(tiny_bundle, tmp_path):
    _, encoder = tiny_bundle
    impossible = ParityCheck(fp32_max_abs_error=-1.0)
    with pytest.raises(ValueError, match="does not match Keras.*No bundle was written"):
        OnnxExporter(encoder).export(tmp_path / "bad", check=impossible)
    assert list(tmp_path.iterdir()) == []


def test_fp32_limit_scales_with_the_largest_output(tiny_bundle):
    bundle, encoder = tiny_bundle
    exporter = OnnxExporter(encoder)
    check = ParityCheck()
    rng = np.random.default_rng(check.seed)
    largest = {"compressed": 0.0, "original": 0.0}
    for batch, length in check.shapes:
        length = min(length, encoder.backbone.max_length or length)
        tokens = random_token_batch(
            (batch, length), exporter._vocabulary_size, exporter._pad_id, rng
        )
        outputs = encoder.predict_on_batch(tokens)
        for name in largest:
            largest[name] = max(largest[name], float(np.abs(outputs[name]).max()))
    limits = BundleManifest.load(bundle).verification["fp32_error_limit"]
    for name, value in largest.items():
        assert limits[name] == pytest.approx(1e-4 * max(1.0, value), rel=1e-5)


def test_existing_bundle_needs_overwrite(tiny_bundle, tmp_path):
    _, encoder = tiny_bundle
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists.*overwrite"):
        OnnxExporter(encoder).export(tmp_path / "taken")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8"):
        OnnxExporter(encoder).export(tmp_path / "other", precision="bf16")


def test_large_models_keep_weights_as_external_data(tiny_bundle, tmp_path):
    from marc_keras.export.onnx_encoder import OnnxEncoder

    bundle, encoder = tiny_bundle
    manifest = OnnxExporter(encoder).export(tmp_path / "external", external_data_threshold=0)
    assert set(manifest.files) == {"model.onnx", "model.onnx.data", "tokenizer.json"}
    texts = ["the action movie", "user likes drama film"]
    np.testing.assert_allclose(
        OnnxEncoder(tmp_path / "external", provider="cpu").encode(texts)["compressed"],
        OnnxEncoder(bundle, provider="cpu").encode(texts)["compressed"],
        atol=1e-5,
    )


@pytest.fixture(scope="module")
def minilm_bundle(minilm_path, tmp_path_factory):
    import marc_keras

    model = marc_keras.MARC.from_preset(minilm_path, lora_rank=4, max_length=64)
    for variable in model.backbone.backbone.weights:
        if variable.name == "lora_kernel_b":
            variable.assign(
                np.random.default_rng(0).normal(0, 0.02, variable.shape).astype("float32")
            )
    encoder = model.encoder()
    bundle = tmp_path_factory.mktemp("minilm") / "bundle"
    OnnxExporter(encoder).export(bundle)
    return bundle, encoder


def test_minilm_bundle_matches_keras_on_real_texts(minilm_bundle):
    from marc_keras.export.onnx_encoder import OnnxEncoder

    bundle, encoder = minilm_bundle
    texts = [
        "Heat (1995). Genres: Action, Crime, Thriller.",
        "A user, male, age 25-34, programmer. Recently watched: Toy Story (1995), 5 stars; "
        "Fargo (1996), 4 stars; Alien (1979), 3 stars; Heat (1995), 5 stars.",
        "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001). Genres: Comedy, Romance.",
    ]
    expected = encoder.encode(texts)
    actual = OnnxEncoder(bundle, provider="cpu").encode(texts)
    for name in ("compressed", "original"):
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-4)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (
        manifest["outputs"] == {"compressed": 128, "original": 384} and manifest["num_layers"] == 6
    )


def _op_types(bundle):
    return {node.op_type for node in onnx.load(str(bundle / "model.onnx")).graph.node}


def test_default_export_fuses_attention_and_records_it(tiny_bundle):
    bundle, _ = tiny_bundle
    manifest = BundleManifest.load(bundle)
    assert manifest.optimization == {
        "requested": "auto",
        "applied": "fused",
        "einsum_as_matmul": 12,
        "fused_attention": 2,
    }
    assert "Attention" in _op_types(bundle) and "Softmax" not in _op_types(bundle)


def test_int8_quantizes_the_fused_attention(make_tiny_encoder, tmp_path):
    encoder = make_tiny_encoder()
    manifest = OnnxExporter(encoder).export(tmp_path / "int8", precision="int8")
    assert manifest.optimization["applied"] == "fused"
    assert "Attention" in manifest.quantization["op_types"]
    assert "QAttention" in _op_types(tmp_path / "int8")
    _compare_at_other_shapes(
        tmp_path / "int8",
        encoder,
        lambda a, b: np.testing.assert_array_less(0.97, row_cosines(a, b)),
    )


@pytest.mark.parametrize(
    ("optimize", "present", "absent"),
    [("none", "Einsum", "Attention"), ("basic", "Softmax", "Einsum")],
)
def test_lower_optimizations_keep_their_graph(tiny_bundle, tmp_path, optimize, present, absent):
    bundle, encoder = tiny_bundle
    manifest = OnnxExporter(encoder).export(tmp_path / optimize, optimize=optimize)
    assert manifest.optimization["applied"] == optimize
    assert present in _op_types(tmp_path / optimize)
    assert absent not in _op_types(tmp_path / optimize)
    _compare_at_other_shapes(
        tmp_path / optimize, encoder, lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4)
    )


def test_fused_on_a_decoder_falls_back_to_basic_with_a_warning(make_tiny_encoder, tmp_path):
    encoder = make_tiny_encoder(architecture="llama", pooling="last")
    with pytest.warns(UserWarning, match="optimize='basic' instead of 'fused'.*decoder"):
        manifest = OnnxExporter(encoder).export(tmp_path / "llama", optimize="fused")
    assert manifest.optimization["applied"] == "basic"
    assert "no attention block matched" in manifest.optimization["fallback"]


def test_fp16_is_not_fused_and_says_why(tiny_bundle, tmp_path):
    _, encoder = tiny_bundle
    manifest = OnnxExporter(encoder).export(tmp_path / "fp16", precision="fp16")
    assert manifest.optimization["applied"] == "basic"
    assert "float32-only" in manifest.optimization["fallback"]


def test_a_fused_graph_that_fails_the_gate_falls_back(tiny_bundle, tmp_path, monkeypatch):
    from marc_keras.export import attention_fusion, onnx_exporter

    def fuse_wrongly(model):
        fused = attention_fusion.fuse_attention(model)
        for tensor in model.graph.initializer:
            if tensor.name.endswith("qkv_bias"):
                bias = onnx.numpy_helper.to_array(tensor) + 1.0
                tensor.CopyFrom(onnx.numpy_helper.from_array(bias, tensor.name))
        return fused

    monkeypatch.setattr(onnx_exporter, "fuse_attention", fuse_wrongly)
    _, encoder = tiny_bundle
    with pytest.warns(UserWarning, match="failed the parity gate"):
        manifest = OnnxExporter(encoder).export(tmp_path / "fallback", optimize="fused")
    assert manifest.optimization["applied"] == "basic"
    assert "Attention" not in _op_types(tmp_path / "fallback")


def test_unknown_optimization_is_an_error_listing_the_options(tiny_bundle, tmp_path):
    _, encoder = tiny_bundle
    with pytest.raises(ValueError, match="optimize must be one of none, basic, fused; got 'max'"):
        OnnxExporter(encoder).export(tmp_path / "x", optimize="max")
