"""How a downstream ranker regularises the path of an external vector (downstream v3)."""

from __future__ import annotations

import dataclasses

from marc_keras.config import config_checks as check


@dataclasses.dataclass(frozen=True)
class AdaptorSetting:
    """Regularisation of the expert adaptors that feed LLM vectors into the ranker.

    With unseen test users, a dense vector per training user lets the ranker
    memorise each user's click bias (downstream v2: random vectors cost 0.02
    AUC on the kar tier). These settings limit what the adaptor can memorise;
    all off (the defaults) is the v2 adaptor, bit for bit.

    Args:
        input_dropout: dropout rate on the vector before the experts and the
            gate, in [0, 1).
        expert_dropout: dropout rate after each hidden layer of the experts, in [0, 1).
        input_noise: std of the Gaussian noise added to the vector during
            training, as a multiple of each dimension's std over the
            training users' (items') vectors; >= 0.
        weight_decay: L2 penalty `weight_decay * sum(w ** 2)` on the
            adaptors' kernels, added to the loss (FuxiCTR's `net_regularizer`
            form); the ranker's own AdamW decay is separate and unchanged.
            >= 0.
        user_dim: width of the user tower's field (a bottleneck such as 8 or
            16), or `None` for the ranker's embedding width (32).

    Example:
    >>> AdaptorSetting(input_dropout=0.5).label()
    'drop0.5'
    """

    input_dropout: float = 0.0
    expert_dropout: float = 0.0
    input_noise: float = 0.0
    weight_decay: float = 0.0
    user_dim: int | None = None

    def check(self, prefix: str) -> None:
        """Range checks, naming each key as `{prefix}{field}` (`DownstreamConfig` calls it)."""
        for name in ("input_dropout", "expert_dropout"):
            check.real_number(
                f"{prefix}{name}", getattr(self, name), minimum=0.0, below=1.0,
                why=" (a dropout rate in [0, 1))",
            )  # fmt: skip
        check.real_number(f"{prefix}input_noise", self.input_noise, minimum=0.0)
        check.real_number(f"{prefix}weight_decay", self.weight_decay, minimum=0.0)
        check.whole_number(f"{prefix}user_dim", self.user_dim, minimum=1, optional=True)

    def ranker_arguments(self) -> dict:
        """Keyword arguments of every CTR ranker (`FieldRanker`) for this setting."""
        return {
            "adaptor_input_dropout": self.input_dropout,
            "adaptor_expert_dropout": self.expert_dropout,
            "adaptor_input_noise": self.input_noise,
            "adaptor_weight_decay": self.weight_decay,
            "user_adaptor_dim": self.user_dim,
        }

    def strength(self) -> tuple:
        """Orders settings from weaker to stronger regularisation (for ties).

        Fewer active regularisers first, then the narrower bottleneck last,
        then smaller weight decay, noise and dropout.
        """
        active = sum(
            value not in (0.0, None)
            for value in (self.input_dropout, self.expert_dropout, self.input_noise,
                          self.weight_decay, self.user_dim)
        )  # fmt: skip
        return (
            active,
            -(self.user_dim or 1_000_000),
            self.weight_decay,
            self.input_noise,
            self.input_dropout,
            self.expert_dropout,
        )

    def label(self) -> str:
        """A short name of the active settings, e.g. "drop0.2+noise0.5"; "none" when all off."""
        parts = [
            f"{short}{value:g}"
            for short, value in (
                ("drop", self.input_dropout),
                ("edrop", self.expert_dropout),
                ("noise", self.input_noise),
                ("wd", self.weight_decay),
            )
            if value
        ]
        if self.user_dim is not None:
            parts.append(f"udim{self.user_dim}")
        return "+".join(parts) or "none"
