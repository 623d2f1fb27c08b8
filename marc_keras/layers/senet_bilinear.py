"""FiBiNet's SENET field re-weighting followed by bilinear pairwise interactions."""

from __future__ import annotations

import difflib
import itertools
from typing import Any

import keras
import numpy as np
from keras import ops

BILINEAR_TYPES = ("field_all", "field_each", "field_interaction")
EXCITATION_ACTIVATIONS = ("relu", "sigmoid")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ValueError(
        f"SenetBilinear {name} must be one of {', '.join(choices)}; got '{value}'.{hint}"
    )


@keras.saving.register_keras_serializable(package="marc_keras")
class SenetBilinear(keras.layers.Layer):
    """Bilinear products of every field pair, of the embeddings and of their SENET re-weighting.

    From FiBiNet (Huang et al., "FiBiNET: Combining Feature Importance and
    Bilinear feature Interaction for Click-Through Rate Prediction", RecSys
    2019). SENET squeezes each field to the mean of its embedding (B, F),
    excites it with a two-layer MLP without biases (F -> max(1, int(F /
    reduction_ratio)) -> F, relu after both) and scales each field by the
    result. The bilinear interaction of fields i < j is `(e_i W) * e_j`:
    "field_all" shares one E x E W over all pairs, "field_each" has one W per
    field i, "field_interaction" one per pair.

    Follows KAR's `SqueezeExtractionLayer`, `BilinearInteractionLayer` and
    `FiBiNet` in `RS/layers.py` / `RS/models.py`: one bilinear layer is
    applied to both the embeddings (p) and the SENET embeddings (q), and
    KAR's defaults (reduction_ratio 0.5, so the excitation widens to 2F;
    "field_all"). FuxiCTR's `model_zoo/FiBiNET/src/FiBiNET.py` uses two
    bilinear layers, one for p and one for q; `share_bilinear=False` gives
    that. The pair products are taken as in FuxiCTR's `BilinearInteractionV2`
    (`fuxictr/pytorch/layers/interactions/bilinear_interaction.py`) with W
    stored (in, out), as a Keras kernel: `e_i @ W`.

    Args:
        reduction_ratio: the excitation's hidden width is
            max(1, int(F / reduction_ratio)); must be > 0. Default 0.5 (KAR).
        bilinear_type: "field_all", "field_each" or "field_interaction".
        excitation_activation: "relu" (FiBiNet, KAR) or "sigmoid", after the
            excitation's last layer.
        share_bilinear: one bilinear layer for p and q (KAR) rather than one each (FuxiCTR).
        **kwargs: base layer arguments.

    Returns:
        Called on (B, F, E) field embeddings, returns (B, 2 * P * E) with
        P = F (F - 1) / 2: the flattened (B, P, E) products of the
        embeddings, then those of the SENET embeddings; pairs in the order
        (0, 1), (0, 2), ..., (F - 2, F - 1).

    Example:
    >>> senet_bilinear = SenetBilinear()
    >>> senet_bilinear(np.zeros((4, 5, 8), "float32")).shape  # 2 * 10 pairs * 8
    torch.Size([4, 160])
    """

    def __init__(
        self,
        reduction_ratio: float = 0.5,
        bilinear_type: str = "field_all",
        excitation_activation: str = "relu",
        share_bilinear: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not float(reduction_ratio) > 0.0:
            raise ValueError(f"SenetBilinear reduction_ratio must be > 0; got {reduction_ratio}.")
        self.reduction_ratio = float(reduction_ratio)
        self.bilinear_type = _check_choice("bilinear_type", bilinear_type, BILINEAR_TYPES)
        self.excitation_activation = _check_choice(
            "excitation_activation", excitation_activation, EXCITATION_ACTIVATIONS
        )
        self.share_bilinear = bool(share_bilinear)

    def build(self, input_shape) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[1] < 2:
            raise ValueError(
                "SenetBilinear takes (B, F, E) field embeddings with F >= 2; "
                f"got shape {input_shape}."
            )
        num_fields, embedding_dim = input_shape[1], input_shape[2]
        reduced = max(1, int(num_fields / self.reduction_ratio))
        self.excitation_kernels = [
            self.add_weight(shape=shape, initializer="glorot_uniform", name=f"excitation_{index}")
            for index, shape in enumerate(((num_fields, reduced), (reduced, num_fields)))
        ]
        left, right = zip(*itertools.combinations(range(num_fields), 2))
        self.left_fields = np.array(left, "int32")
        self.right_fields = np.array(right, "int32")
        leading = {"field_all": (), "field_each": (num_fields,), "field_interaction": (len(left),)}
        shape = (*leading[self.bilinear_type], embedding_dim, embedding_dim)
        names = ("bilinear",) if self.share_bilinear else ("bilinear_p", "bilinear_q")
        self.bilinear_kernels = [
            self.add_weight(shape=shape, initializer="glorot_normal", name=name) for name in names
        ]

    def _senet(self, field_embeddings):
        squeezed = ops.mean(field_embeddings, axis=-1)  # (B, F)
        hidden = ops.relu(ops.matmul(squeezed, self.excitation_kernels[0]))
        excitation = ops.matmul(hidden, self.excitation_kernels[1])
        if self.excitation_activation == "relu":
            excitation = ops.relu(excitation)
        else:
            excitation = ops.sigmoid(excitation)
        return field_embeddings * excitation[:, :, None]

    def _bilinear(self, field_embeddings, kernel):
        right = ops.take(field_embeddings, self.right_fields, axis=1)  # (B, P, E)
        if self.bilinear_type == "field_interaction":
            # One W per pair: gather the pairs' left fields first, then transform.
            left = ops.take(field_embeddings, self.left_fields, axis=1)
            return ops.einsum("bpi,pio->bpo", left, kernel) * right
        if self.bilinear_type == "field_all":
            transformed = ops.matmul(field_embeddings, kernel)  # (B, F, E)
        else:
            transformed = ops.einsum("bfi,fio->bfo", field_embeddings, kernel)
        return ops.take(transformed, self.left_fields, axis=1) * right

    def call(self, field_embeddings):
        kernel_p, kernel_q = self.bilinear_kernels[0], self.bilinear_kernels[-1]
        products = ops.concatenate(
            [
                self._bilinear(field_embeddings, kernel_p),
                self._bilinear(self._senet(field_embeddings), kernel_q),
            ],
            axis=1,
        )  # (B, 2P, E)
        return ops.reshape(products, (-1, products.shape[1] * products.shape[2]))

    def compute_output_shape(self, input_shape) -> tuple:
        num_fields, embedding_dim = input_shape[1], input_shape[2]
        return (input_shape[0], num_fields * (num_fields - 1) * embedding_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "reduction_ratio": self.reduction_ratio,
            "bilinear_type": self.bilinear_type,
            "excitation_activation": self.excitation_activation,
            "share_bilinear": self.share_bilinear,
        }
