import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from marc_keras.export.onnx_graph import rewrite_einsum_as_matmul, sort_topologically


def _einsum_model(equation, x_shape, y_shape, y_constant=None):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    initializers = []
    if y_constant is None:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape))
    else:
        initializers.append(numpy_helper.from_array(y_constant, "y"))
    node = helper.make_node("Einsum", ["x", "y"], ["out"], equation=equation, name="einsum")
    out_shape = np.einsum(equation, np.zeros(x_shape), np.zeros(y_shape)).shape
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph([node], "g", inputs, [output], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(model, feeds):
    return onnxruntime.InferenceSession(model.SerializeToString()).run(None, feeds)[0]


@pytest.mark.parametrize(
    ("equation", "x_shape", "w_shape"),
    [
        ("abc,cde->abde", (2, 5, 6), (6, 3, 4)),  # keras-hub query/key/value projection
        ("abcd,cde->abe", (2, 5, 3, 4), (3, 4, 6)),  # keras-hub attention output projection
        ("abc,cd->abd", (2, 5, 6), (6, 7)),
    ],
)
def test_constant_weight_einsum_becomes_matmul_with_the_same_values(equation, x_shape, w_shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=x_shape).astype("float32")
    w = rng.normal(size=w_shape).astype("float32")
    model = _einsum_model(equation, x_shape, w_shape, y_constant=w)
    assert rewrite_einsum_as_matmul(model) == 1
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert "Einsum" not in ops and "MatMul" in ops
    assert [tensor.name for tensor in model.graph.initializer if tensor.name == "y"] == []
    np.testing.assert_allclose(
        _run(model, {"x": x}), np.einsum(equation, x, w), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("equation", "x_shape", "y_shape"),
    [
        ("aecd,abcd->acbe", (2, 7, 3, 4), (2, 5, 3, 4)),  # attention scores: keys . queries
        ("acbe,aecd->abcd", (2, 3, 5, 7), (2, 7, 3, 4)),  # attention output: probs . values
    ],
)
def test_batched_einsum_of_two_tensors_becomes_matmul(equation, x_shape, y_shape):
    rng = np.random.default_rng(1)
    x = rng.normal(size=x_shape).astype("float32")
    y = rng.normal(size=y_shape).astype("float32")
    model = _einsum_model(equation, x_shape, y_shape)
    assert rewrite_einsum_as_matmul(model) == 1
    onnx.checker.check_model(model)
    np.testing.assert_allclose(
        _run(model, {"x": x, "y": y}), np.einsum(equation, x, y), rtol=1e-5, atol=1e-5
    )


def test_einsums_that_are_not_plain_products_are_left_alone():
    model = _einsum_model("abc,abc->ab", (2, 3, 4), (2, 3, 4))
    assert rewrite_einsum_as_matmul(model) == 0
    assert [node.op_type for node in model.graph.node] == ["Einsum"]


def test_sort_topologically_puts_producers_first():
    first = helper.make_node("Relu", ["x"], ["a"])
    second = helper.make_node("Neg", ["a"], ["out"])
    graph = helper.make_graph(
        [second, first],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    sort_topologically(graph)
    assert [node.op_type for node in graph.node] == ["Relu", "Neg"]
    broken = helper.make_graph(
        [helper.make_node("Neg", ["missing"], ["out"])],
        "g",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ValueError, match="undefined inputs"):
        sort_topologically(broken)
