"""Graph passes on exported encoders: Einsum -> MatMul, float16, dynamic int8.

keras-hub writes its attention projections as `EinsumDense` layers, which
export as ONNX `Einsum` nodes. ONNX Runtime runs Einsum through a generic
kernel, does not fuse it, and its dynamic quantizer skips it; rewritten as
Reshape / Transpose + MatMul the same arithmetic takes ORT's fast GEMM path
and quantizes (DESIGN.md Sec. 3: "the keras-hub graph uses Einsum where HF
uses MatMul; that is a gap to close").
"""

from __future__ import annotations

import math
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Normalisation and its pieces stay float32 in fp16 bundles: LayerNorm after
# attention overflows in fp16 (DESIGN.md Sec. 6); RMSNorm is exported as
# Pow / ReduceMean / Sqrt.
FLOAT16_KEEP_FLOAT32_OPS = (
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "RMSNormalization",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Reciprocal",
)


class _NodeFactory:
    """Makes uniquely named nodes and initializers next to an existing node."""

    def __init__(self, graph, prefix):
        self.graph = graph
        self.prefix = prefix
        self.nodes = []

    def constant(self, name, array):
        tensor = numpy_helper.from_array(np.asarray(array), f"{self.prefix}/{name}")
        self.graph.initializer.append(tensor)
        return tensor.name

    def node(self, op_type, inputs, name, output=None, **attributes):
        output = output or f"{self.prefix}/{name}"
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=f"{self.prefix}/{name}", **attributes)
        )
        return output


def _parse_equation(node):
    equation = helper.get_node_attr_value(node, "equation")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    equation = equation.replace(" ", "")
    if "..." in equation or "->" not in equation:
        return None
    inputs, output = equation.split("->")
    operands = inputs.split(",")
    if len(operands) != 2 or any(len(set(term)) != len(term) for term in (*operands, output)):
        return None
    return operands[0], operands[1], output


def _rewrite_with_constant_weight(factory, node, x_term, w_term, out_term, weight):
    """x (free_x..., contract...) . W (contract..., free_w...) -> (free_x..., free_w...)."""
    contract = [index for index in x_term if index in w_term and index not in out_term]
    free_x = [index for index in x_term if index not in w_term]
    free_w = [index for index in w_term if index not in x_term]
    batch = [index for index in x_term if index in w_term and index in out_term]
    if (
        batch
        or not contract
        or list(x_term) != free_x + contract
        or list(out_term) != free_x + free_w
    ):
        return False
    sizes = dict(zip(w_term, weight.shape))
    permuted = np.transpose(weight, [w_term.index(index) for index in contract + free_w])
    matrix = permuted.reshape(
        math.prod(sizes[i] for i in contract), math.prod(sizes[i] for i in free_w)
    )
    x = node.input[0]
    if len(contract) > 1:
        shape = factory.constant("flatten_shape", np.array([0] * len(free_x) + [-1], "int64"))
        x = factory.node("Reshape", [x, shape], "flatten")
    if len(free_w) == 1:
        factory.node(
            "MatMul", [x, factory.constant("weight", matrix)], "matmul", output=node.output[0]
        )
    else:
        product = factory.node("MatMul", [x, factory.constant("weight", matrix)], "matmul")
        shape = factory.constant(
            "split_shape", np.array([0] * len(free_x) + [sizes[i] for i in free_w], "int64")
        )
        factory.node("Reshape", [product, shape], "split", output=node.output[0])
    return True


def _transpose(factory, name, value, term, target, output=None):
    if term == target:
        return value
    return factory.node(
        "Transpose", [value], name, output=output, perm=[term.index(index) for index in target]
    )


def _rewrite_batched(factory, node, x_term, y_term, out_term):
    """Batched products with one contracted and one free index per side (attention)."""
    batch = [index for index in out_term if index in x_term and index in y_term]
    contract = [index for index in x_term if index in y_term and index not in out_term]
    free_x = [index for index in x_term if index not in y_term]
    free_y = [index for index in y_term if index not in x_term]
    if len(contract) != 1 or len(free_x) != 1 or len(free_y) != 1:
        return False
    (free_left, left_term, left), (free_right, right_term, right) = sorted(
        [(free_x[0], x_term, node.input[0]), (free_y[0], y_term, node.input[1])],
        key=lambda side: out_term.index(side[0]),
    )
    left_target = "".join(batch + [free_left] + contract)
    right_target = "".join(batch + contract + [free_right])
    left = _transpose(factory, "left", left, left_term, left_target)
    right = _transpose(factory, "right", right, right_term, right_target)
    result_term = "".join(batch + [free_left, free_right])
    if result_term == out_term:
        factory.node("MatMul", [left, right], "matmul", output=node.output[0])
    else:
        product = factory.node("MatMul", [left, right], "matmul")
        _transpose(factory, "output", product, result_term, out_term, output=node.output[0])
    return True


def rewrite_einsum_as_matmul(model: onnx.ModelProto) -> int:
    """Replaces two-operand Einsum nodes that are matrix products by MatMul.

    Handles the two shapes keras-hub exports: a tensor times a constant
    weight (`abc,cde->abde`, `abcd,cde->abe`), and batched products of two
    tensors with one contracted index (`aecd,abcd->acbe`). Other Einsums are
    left as they are. The model is changed in place.

    Args:
        model: an `onnx.ModelProto`.

    Returns:
        The number of Einsum nodes rewritten.

    Example:
    >>> rewritten = rewrite_einsum_as_matmul(model)  # 36 for all-MiniLM-L6-v2
    """
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    new_nodes, rewritten, dropped = [], 0, set()
    for position, node in enumerate(graph.node):
        terms = _parse_equation(node) if node.op_type == "Einsum" else None
        if terms is None:
            new_nodes.append(node)
            continue
        factory = _NodeFactory(graph, f"{node.name or 'einsum'}_{position}_as_matmul")
        weight_name = node.input[1]
        if weight_name in initializers:
            done = _rewrite_with_constant_weight(
                factory, node, *terms, numpy_helper.to_array(initializers[weight_name])
            )
            if done and consumers[weight_name] == 1:
                dropped.add(weight_name)
        else:
            done = _rewrite_batched(factory, node, *terms)
        new_nodes.extend(factory.nodes if done else [node])
        rewritten += done
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    kept = [tensor for tensor in graph.initializer if tensor.name not in dropped]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return rewritten


def convert_to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of `model` with float32 inputs/outputs and norms kept float32.

    Args:
        model: an `onnx.ModelProto` (float32).

    Returns:
        A new `onnx.ModelProto`.
    """
    from onnxruntime.transformers import float16

    # Shape inference re-derives the value types after conversion; stale
    # float32 annotations from the exporter would contradict it.
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.ClearField("value_info")
    converted = float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FLOAT16_KEEP_FLOAT32_OPS],
    )
    # The converter appends the Casts it puts around float32 islands at the
    # end of the node list; ONNX requires producers before consumers.
    sort_topologically(converted.graph)
    return converted


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorders `graph.node` so that every node comes after its inputs' producers."""
    available = {value.name for value in graph.input} | {
        tensor.name for tensor in graph.initializer
    }
    available.add("")
    pending, ordered = list(graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            names = sorted({name for node in pending for name in node.input} - available)[:5]
            raise ValueError(f"The ONNX graph has a cycle or undefined inputs {names}.")
        ready_ids = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in ready_ids]
        for node in ready:
            ordered.append(node)
            available.update(node.output)
    graph.ClearField("node")
    graph.node.extend(ordered)


# Dynamic int8 as ONNX Runtime's CPU kernels run it: activations uint8 per
# tensor at run time, weights int8 per output channel, restricted to 7 bits.
# Without VNNI, x86 multiplies u8 x s8 pairs with VPMADDUBSW, whose int16 sums
# saturate for full-range weights (per-text cosine 0.906 on an AVX2-only EPYC);
# with 7-bit weights no sum can saturate, so AVX2, AVX-512 and VNNI kernels
# compute the same exact integer products and the accuracy no longer depends on
# the CPU, while U8S8 keeps the VNNI fast path (ORT quantization docs,
# "reduce_range"; U8U8 would avoid saturation too but gives up VNNI's U8S8 kernel).
INT8_SCHEME = {
    "format": "QOperator dynamic (MatMulInteger / DynamicQuantizeMatMul)",
    "activations": "uint8, per tensor, dynamic",
    "weights": "int8, per output channel",
    "reduce_range": True,
    "op_types": ["MatMul", "Gemm"],
}


def quantize_int8(
    source_path: str | os.PathLike,
    target_path: str | os.PathLike,
    use_external_data: bool = False,
    fused_attention: bool = False,
) -> dict:
    """Dynamic int8 quantization of every MatMul weight (ONNX Runtime CPU only).

    Applies `INT8_SCHEME`: 7-bit int8 weights per output channel, uint8
    activations quantized per batch at run time. Run
    `rewrite_einsum_as_matmul` first, or the attention projections stay float32.

    Args:
        source_path: the float32 `.onnx` file.
        target_path: where the quantized model goes.
        use_external_data: write the weights to `model.onnx.data` beside it
            (models over 2 GB).
        fused_attention: also quantize `Attention` nodes (`fuse_attention`)
            into `QAttention`, whose packed Q/K/V weights get the same
            7-bit per-channel scheme.

    Returns:
        `INT8_SCHEME` (with "Attention" among its op types when
        `fused_attention`), for the bundle manifest.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scheme = dict(INT8_SCHEME)
    if fused_attention:
        scheme["op_types"] = [*INT8_SCHEME["op_types"], "Attention"]

    quantize_dynamic(
        str(source_path),
        str(target_path),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=scheme["reduce_range"],
        op_types_to_quantize=scheme["op_types"],
        use_external_data_format=use_external_data,
    )
    return scheme
