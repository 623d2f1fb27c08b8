"""FiGNN's field graph: attentional edges, per-node message transforms, GRU state updates."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="marc_keras")
class GraphInteraction(keras.layers.Layer):
    """Message passing between the fields of an example over a fully connected graph.

    From FiGNN (Li et al., "Fi-GNN: Modeling Feature Interactions via Graph
    Neural Networks for CTR Prediction", CIKM 2019). Follows FuxiCTR's
    `FiGNN_Layer` and `GraphLayer` in `model_zoo/FiGNN/src/FiGNN.py` (KAR's
    `FiGNNBlock` / `GraphLayer` in `RS/layers.py` are the same code):

    - edges, once from the input e: `alpha_ij = leaky_relu(w . [e_i, e_j], 0.01)`,
      self-loops set to -inf, softmax over j, so each row spreads over the
      other fields;
    - each of `num_layers` steps: `m_i = W_in_i (sum_j g_ij W_out_j h_j) + b`,
      then `h_i = GRUCell(m_i, h_i)` (one cell shared by all fields and steps;
      `h_i = m_i + h_i` without `use_gru`), then `h_i += e_i` with `use_residual`.

    The per-field transforms are stored (in, out), as Keras kernels: `h @ W`
    where FuxiCTR computes `W @ h`. Keras' GRUCell (reset_after=True) is
    torch's GRUCell with the gates in z, r, h order. Defaults are KAR's
    (2 steps, one graph layer reused by every step); FuxiCTR's model uses
    3 steps and a graph layer per step.

    Args:
        num_layers: number of message-passing steps; default 2 (KAR).
        reuse_graph_layer: one set of W_in, W_out, b for all steps (KAR's
            default) rather than one per step.
        use_gru: update states with a GRU cell rather than by addition.
        use_residual: add the input embeddings after every step.
        **kwargs: base layer arguments.

    Returns:
        Called on (B, F, E) field embeddings (F >= 2), returns (B, F, E).

    Example:
    >>> graph = GraphInteraction(num_layers=2)
    >>> graph(np.zeros((4, 6, 16), "float32")).shape
    torch.Size([4, 6, 16])
    """

    def __init__(
        self,
        num_layers: int = 2,
        reuse_graph_layer: bool = True,
        use_gru: bool = True,
        use_residual: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"GraphInteraction num_layers must be at least 1; got {num_layers}.")
        self.num_layers = int(num_layers)
        self.reuse_graph_layer = bool(reuse_graph_layer)
        self.use_gru = bool(use_gru)
        self.use_residual = bool(use_residual)

    def build(self, input_shape) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[1] < 2:
            raise ValueError(
                "GraphInteraction takes (B, F, E) field embeddings with F >= 2 (a field "
                f"has no edge to itself); got shape {input_shape}."
            )
        num_fields, embedding_dim = input_shape[1], input_shape[2]
        self.attention_kernel = self.add_weight(
            shape=(2 * embedding_dim, 1), initializer="glorot_uniform", name="attention_kernel"
        )
        self.graph_layers = []
        for index in range(1 if self.reuse_graph_layer else self.num_layers):
            transforms = [
                self.add_weight(
                    shape=(num_fields, embedding_dim, embedding_dim),
                    initializer="glorot_normal",
                    name=f"{name}_{index}",
                )
                for name in ("kernel_out", "kernel_in")
            ]
            bias = self.add_weight(
                shape=(embedding_dim,), initializer="zeros", name=f"bias_{index}"
            )
            self.graph_layers.append((*transforms, bias))
        self.gru_cell = None
        if self.use_gru:
            self.gru_cell = keras.layers.GRUCell(
                embedding_dim, dtype=self.dtype_policy, name="gru_cell"
            )
            self.gru_cell.build((None, embedding_dim))

    def _graph(self, field_embeddings):
        # w . [e_i, e_j] = w_src . e_i + w_dst . e_j: the F^2 x 2E pair tensor is never formed.
        embedding_dim = field_embeddings.shape[-1]
        source = ops.matmul(field_embeddings, self.attention_kernel[:embedding_dim])  # (B, F, 1)
        target = ops.matmul(field_embeddings, self.attention_kernel[embedding_dim:])  # (B, F, 1)
        alpha = ops.leaky_relu(source + ops.transpose(target, (0, 2, 1)), negative_slope=0.01)
        self_loops = ops.eye(field_embeddings.shape[1], dtype="bool")
        alpha = ops.where(self_loops[None], float("-inf"), alpha)
        return ops.softmax(alpha, axis=-1)  # (B, F, F), row i over the fields j != i

    def call(self, field_embeddings):
        num_fields, embedding_dim = field_embeddings.shape[1], field_embeddings.shape[2]
        graph = self._graph(field_embeddings)
        h = field_embeddings
        for step in range(self.num_layers):
            kernel_out, kernel_in, bias = self.graph_layers[0 if self.reuse_graph_layer else step]
            outgoing = ops.einsum("bfi,fio->bfo", h, kernel_out)
            message = ops.einsum("bfi,fio->bfo", ops.matmul(graph, outgoing), kernel_in) + bias
            if self.gru_cell is not None:
                state, _ = self.gru_cell(
                    ops.reshape(message, (-1, embedding_dim)), ops.reshape(h, (-1, embedding_dim))
                )
                h = ops.reshape(state, (-1, num_fields, embedding_dim))
            else:
                h = message + h
            if self.use_residual:
                h = h + field_embeddings
        return h

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "reuse_graph_layer": self.reuse_graph_layer,
            "use_gru": self.use_gru,
            "use_residual": self.use_residual,
        }
