"""Fuses the attention blocks of an exported encoder into ONNX Runtime's `Attention` op.

Keras' `MultiHeadAttention` exports (after `rewrite_einsum_as_matmul`) as
three projection MatMuls, Reshape to heads, bias Add, a scale Mul, two
Transposes, the score MatMul, a padding `Where`, Softmax, a second `Where`
that zeroes masked keys, the context MatMul, a Transpose and a Reshape back:
about 16 nodes per block that ONNX Runtime runs one by one (its own
transformer fusions look for the Hugging Face export's pattern and do not
recognise this one). Each such block becomes one `com.microsoft.Attention`
node with the Q, K and V weights packed into one (d, 3d) GEMM and the
padding mask as its 2-D `mask_index`, the form ORT's BERT optimiser writes and
its CPU kernel and int8 quantizer (`QAttention`) handle (paper Sec. 3.2
deploys the frozen encoder; DESIGN.md Sec. 3).

Only what is proven equal is rewritten: the key mask must be the graph's
`padding_mask` input broadcast over heads and queries, every projection a
constant weight with a constant per-head bias, and Q, K and V must have the
same heads (no rotary position, causal mask or grouped KV heads). A decoder
backbone's blocks therefore stay as they are and `fuse_attention` returns 0;
the exporter then keeps the unfused graph.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

MICROSOFT_DOMAIN = "com.microsoft"
PADDING_MASK_INPUT = "padding_mask"


@dataclasses.dataclass
class _Projection:
    """One of Q, K, V: x (B, S, d) @ weight (d, N*H) -> (B, S, N, H) + bias (N, H)."""

    input: str
    weight: np.ndarray
    bias: np.ndarray
    heads: int
    nodes: list


class _Graph:
    """Producer / consumer / constant lookups over a graph's node list."""

    def __init__(self, graph):
        self.graph = graph
        self.producer = {output: node for node in graph.node for output in node.output}
        self.consumers = collections.defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.outputs = {value.name for value in graph.output}

    def constant(self, name):
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(helper.get_node_attr_value(node, "value"))
        return None

    def op(self, name, op_type):
        """The node producing `name` if it is an `op_type`, else None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name, op_type):
        consumers = self.consumers.get(name, [])
        if len(consumers) == 1 and consumers[0].op_type == op_type:
            return consumers[0]
        return None


def _perm(node):
    return list(helper.get_node_attr_value(node, "perm"))


def _projection(graph, name):
    """Matches Add(Reshape(MatMul(x, W), [0, 0, N, H]), b) producing `name`."""
    add = graph.op(name, "Add")
    if add is None:
        return None
    reshape_output, bias_name = add.input
    bias = graph.constant(bias_name)
    reshape = graph.op(reshape_output, "Reshape")
    if bias is None or reshape is None or bias.ndim != 2:
        return None
    shape = graph.constant(reshape.input[1])
    matmul = graph.op(reshape.input[0], "MatMul")
    if shape is None or matmul is None or list(shape[:2]) != [0, 0] or len(shape) != 4:
        return None
    weight = graph.constant(matmul.input[1])
    heads, head_size = int(shape[2]), int(shape[3])
    if (
        weight is None
        or weight.ndim != 2
        or weight.shape[1] != heads * head_size
        or bias.shape != (heads, head_size)
    ):
        return None
    return _Projection(matmul.input[0], weight, bias.reshape(-1), heads, [matmul, reshape, add])


def _key_padding_mask(graph, name):
    """Whether `name` is the graph input `padding_mask`, unsqueezed to (B, 1, 1, S), as bool."""
    unsqueezed, nodes = 0, []
    while name != PADDING_MASK_INPUT:
        node = graph.producer.get(name)
        if node is None or node.op_type not in ("Unsqueeze", "Cast"):
            return None
        if node.op_type == "Unsqueeze":
            axes = graph.constant(node.input[1])
            if axes is None or list(axes) != [1]:
                return None
            unsqueezed += 1
        nodes.append(node)
        name = node.input[0]
    return nodes if unsqueezed == 2 else None


def _match_block(graph, softmax):
    """The parts of one attention block around `softmax`, or None if it is not the pattern."""
    masked = graph.op(softmax.input[0], "Where")
    if masked is None or _key_padding_mask(graph, masked.input[0]) is None:
        return None
    scores = graph.op(masked.input[1], "MatMul")
    if scores is None:
        return None
    left = graph.op(scores.input[0], "Transpose")
    right = graph.op(scores.input[1], "Transpose")
    if left is None or right is None or _perm(left) != [0, 2, 1, 3] or _perm(right) != [0, 2, 3, 1]:
        return None
    scaled = graph.op(left.input[0], "Mul")
    scale = graph.constant(scaled.input[1]) if scaled is not None else None
    if scale is None or scale.size != 1:
        return None
    query, key = _projection(graph, scaled.input[0]), _projection(graph, right.input[0])

    probabilities, removed = softmax.output[0], []
    zeroed = graph.only_consumer(probabilities, "Where")
    if zeroed is not None:
        if zeroed.input[0] != masked.input[0] or zeroed.input[1] != probabilities:
            return None
        probabilities, removed = zeroed.output[0], [zeroed]
    context = graph.only_consumer(probabilities, "MatMul")
    if context is None or context.input[0] != probabilities:
        return None
    value_transpose = graph.op(context.input[1], "Transpose")
    if value_transpose is None or _perm(value_transpose) != [0, 2, 1, 3]:
        return None
    value = _projection(graph, value_transpose.input[0])
    back = graph.only_consumer(context.output[0], "Transpose")
    flatten = back and graph.only_consumer(back.output[0], "Reshape")
    if flatten is None or _perm(back) != [0, 2, 1, 3]:
        return None
    flat_shape = graph.constant(flatten.input[1])
    projections = (query, key, value)
    if (
        flat_shape is None
        or list(flat_shape) != [0, 0, -1]
        or None in projections
        or len({p.input for p in projections}) != 1
        or len({p.weight.shape for p in projections}) != 1
        or len({p.heads for p in projections}) != 1
    ):
        return None
    nodes = [
        *(node for projection in projections for node in projection.nodes),
        scaled,
        left,
        right,
        scores,
        masked,
        softmax,
        *removed,
        context,
        value_transpose,
        back,
        flatten,
    ]
    # Removing the block must not starve a reader outside it.
    inside = {id(node) for node in nodes}
    for node in nodes[:-1]:
        for name in node.output:
            if name in graph.outputs or any(
                id(reader) not in inside for reader in graph.consumers[name]
            ):
                return None
    return projections, float(scale.reshape(())), flatten.output[0], nodes


def fuse_attention(model: onnx.ModelProto) -> int:
    """Replaces every attention block of the Keras export by one ORT `Attention` node.

    The model is changed in place; nodes and weights that only the fused
    blocks used are removed, and `com.microsoft` (version 1) is added to the
    opset imports. A block that differs in any way from the pattern in the
    module docstring is left unfused.

    Args:
        model: an `onnx.ModelProto` after `rewrite_einsum_as_matmul`.

    Returns:
        The number of attention blocks fused (6 for all-MiniLM-L6-v2, 0 for
        decoder backbones).

    Example:
    >>> fuse_attention(model)
    6
    """
    graph = _Graph(model.graph)
    if PADDING_MASK_INPUT not in {value.name for value in model.graph.input}:
        return 0
    replaced, fused = {}, 0
    for softmax in [node for node in model.graph.node if node.op_type == "Softmax"]:
        match = _match_block(graph, softmax)
        if match is None:
            continue
        (query, key, value), scale, output, nodes = match
        prefix = f"fused_attention_{fused}"
        weight = numpy_helper.from_array(
            np.concatenate([query.weight, key.weight, value.weight], axis=1).astype("float32"),
            f"{prefix}/qkv_weight",
        )
        bias = numpy_helper.from_array(
            np.concatenate([query.bias, key.bias, value.bias]).astype("float32"),
            f"{prefix}/qkv_bias",
        )
        model.graph.initializer.extend([weight, bias])
        attention = helper.make_node(
            "Attention",
            [query.input, weight.name, bias.name, PADDING_MASK_INPUT],
            [output],
            name=prefix,
            domain=MICROSOFT_DOMAIN,
            num_heads=query.heads,
            scale=scale,
        )
        # The fused node takes the place of the block's last node, after its input exists.
        replaced[id(nodes[-1])] = attention
        for node in nodes[:-1]:
            replaced.setdefault(id(node), None)
        fused += 1
    if not fused:
        return 0
    nodes = [replaced.get(id(node), node) for node in model.graph.node]
    model.graph.ClearField("node")
    model.graph.node.extend(node for node in nodes if node is not None)
    _remove_unused(model.graph)
    if MICROSOFT_DOMAIN not in {opset.domain for opset in model.opset_import}:
        model.opset_import.append(helper.make_opsetid(MICROSOFT_DOMAIN, 1))
    return fused


def _remove_unused(graph):
    """Drops nodes whose outputs nothing reads, then initializers nothing reads."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    graph.ClearField("node")
    graph.node.extend(reversed(kept))
    initializers = [tensor for tensor in graph.initializer if tensor.name in needed]
    graph.ClearField("initializer")
    graph.initializer.extend(initializers)
