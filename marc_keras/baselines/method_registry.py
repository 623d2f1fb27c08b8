"""Every compression method as a configuration of the one MARC trainer (DESIGN.md Sec. 5).

A method is data: which vectors it reports and, for trained methods, the
`[model]` settings that turn MARC's training run into the method. No method
has a trainer of its own; `marc_keras.experiments.comparison` trains and evaluates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

KINDS = ("frozen", "training-free", "trained")


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the comparison table.

    Args:
        name: the row name, e.g. "marc-c".
        kind: "frozen" (the pretrained backbone's d-dim vectors),
            "training-free" (a projection fitted on the frozen vectors:
            `projection` names it) or "trained" (a MARC run with `model`
            overrides, reporting its `vectors`).
        description: one line for tables and `--help`.
        model: `[model]` settings of the training run (trained methods).
        vectors: "compressed" or "original" output of the trained encoder,
            or "cross-fit": the run's heads cross-fitted over training users on
            its original output (`training.cross_fit_folds`).
        projection: "pca", "ae" or "vae" (training-free methods).
        run: the training run it reads, when another method's run has the
            same `model` settings (default: "marc" without overrides, else `name`).

    Example:
    >>> resolve_methods(["marc-c", "mrl"])[1].model
    {'objective': 'mrl', 'hsic_weight': 0.0}
    """

    name: str
    kind: str
    description: str
    model: dict = dataclasses.field(default_factory=dict)
    vectors: str = "compressed"
    projection: str | None = None
    run: str | None = None

    @property
    def run_name(self) -> str:
        return self.run or ("marc" if not self.model else self.name)


_NO_HSIC = {"hsic_weight": 0.0}

METHODS = {
    method.name: method
    for method in (
        Method(
            "frozen",
            "frozen",
            "pretrained backbone, d-dim pooled output, no training",
            vectors="original",
        ),
        Method("pca", "training-free", "PCA of the frozen vectors", projection="pca"),
        Method(
            "ae",
            "training-free",
            "MLP autoencoder bottleneck of the frozen vectors",
            projection="ae",
        ),
        Method(
            "vae",
            "training-free",
            "variational autoencoder mean of the frozen vectors",
            projection="vae",
        ),
        Method(
            "mrl",
            "trained",
            "LoRA + compression, CTR loss on nested prefixes (Matryoshka)",
            {"objective": "mrl", **_NO_HSIC},
        ),
        Method(
            "larr",
            "trained",
            "LoRA + MLP projection, in-batch contrastive loss on clicked pairs",
            {"objective": "contrastive", **_NO_HSIC},
        ),
        Method(
            "bahe",
            "trained",
            "LoRA + linear compression + CTR head on [c_u, c_i]",
            {"compression_hidden_units": (), "explicit_interactions": False, **_NO_HSIC},
        ),
        Method(
            "ese",
            "trained",
            "LoRA + compression, AoE (CoSENT + angle) loss + linear reconstruction (PCA-like)",
            {"objective": "aoe", "reconstruction_weight": 1.0, **_NO_HSIC},
        ),
        Method("marc-c", "trained", "MARC, compressed vectors (MARC-C)"),
        Method(
            "marc-o",
            "trained",
            "MARC, the tuned backbone's d-dim vectors (MARC-O)",
            vectors="original",
        ),
        Method(
            "marc-c-cross-fit",
            "trained",
            "MARC-C from heads cross-fitted over training users on MARC-O",
            vectors="cross-fit",
        ),
        Method("marc-no-hsic", "trained", "MARC without the HSIC term", dict(_NO_HSIC)),
        Method(
            "marc-no-hsic-cross-fit",
            "trained",
            "MARC without the HSIC term, heads cross-fitted over training users",
            dict(_NO_HSIC),
            vectors="cross-fit",
            run="marc-no-hsic",
        ),
        Method(
            "marc-no-mn",
            "trained",
            "MARC without matching network: BCE on scaled cosine of c",
            {"objective": "cosine_bce"},
        ),
        Method(
            "marc-no-ei",
            "trained",
            "MARC without explicit interactions c_u * c_i",
            {"explicit_interactions": False},
        ),
        Method(
            "marc-cs",
            "trained",
            "MARC with a cosine loss instead of cross-entropy",
            {"objective": "cosine"},
        ),
    )
}


def resolve_methods(names: Iterable[str]) -> list[Method]:
    """The registered methods called `names`, in order.

    Raises:
        ValueError: a name is not registered (the message lists the valid ones).
    """
    names = list(names)
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; valid methods are: {', '.join(METHODS)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Methods are listed more than once: {names}.")
    return [METHODS[name] for name in names]
