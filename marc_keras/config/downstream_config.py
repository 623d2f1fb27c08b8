"""How the downstream DCNv2 is trained: the `[evaluate]` table of a run config."""

import copy
import dataclasses

from marc_keras.config import config_checks as check
from marc_keras.config.adaptor_setting import AdaptorSetting
from marc_keras.config.ranker_tier import TIERS

# The downstream DCNv2's shape (DESIGN.md Sec. 4), the one source for both
# ranking engines: `DCNv2Ranker` (Keras 3) and `TFRSRanker` (TensorFlow
# Recommenders). Each field (and each vector adaptor's output) is
# EMBEDDING_DIM wide; the adaptors' experts have ADAPTOR_HIDDEN_UNITS.
EMBEDDING_DIM = 32
CROSS_LAYERS = 3
DEEP_UNITS = (200, 80)
ADAPTOR_HIDDEN_UNITS = (128,)

# The CTR rankers (`marc_keras.ranking.ranker_registry`): DCNv2 is the
# protocol's, the others are MARC Table 4's zoo with KAR's settings; "deepfm"
# pairs every field in its FM (FuxiCTR's way), "deepfm-kar" all but the vectors.
RANKERS = (
    "dcnv2",
    "dcnv1",
    "deepfm",
    "deepfm-kar",
    "xdeepfm",
    "autoint",
    "fibinet",
    "fignn",
    "din",
)

# Each reference row's adaptor setting, chosen on validation users by the
# downstream v3 grid (benchmarks/results/downstream-v3-ml-1m-half.json, rule
# `marc_keras.ranking.adaptor_choice`); validation AUC with all off in brackets.
ROW_ADAPTORS = {
    "random": {"input_dropout": 0.5, "weight_decay": 1e-3},  # 0.7946 (0.7801)
    "profile": {"input_dropout": 0.2},  # 0.7983 (0.7971)
    "frozen": {"input_dropout": 0.5, "weight_decay": 1e-3},  # 0.7945 (0.7828)
    "frozen-user-only": {"input_dropout": 0.5, "weight_decay": 1e-3},  # 0.7940 (0.7829)
    "frozen-item-only": {},  # 0.7938 (all off is the choice)
    "pca-128": {"input_dropout": 0.5, "input_noise": 0.5},  # 0.7944 (0.7827)
}


@dataclasses.dataclass(frozen=True)
class DownstreamConfig:
    """How the downstream DCNv2 is trained for each representation, tier and seed.

    The defaults are the downstream v2 protocol (benchmarks/RESULTS.md): all
    training samples, up to 10 epochs with early stopping on validation-user
    AUC, and a learning rate and batch size chosen once for DCNv2 alone on
    validation users (`python benchmarks/downstream_v2.py grid`).

    Args:
        max_epochs: epoch limit; early stopping on validation AUC usually ends sooner.
        patience: epochs without validation AUC gain before stopping (the
            best epoch's weights are restored).
        batch_size: samples per step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        num_experts: experts per vector adaptor.
        cross_projection_dim: rank of the ranker's cross layers (DCNv2's
            low-rank variant), `None` for full rank.
        seeds: ranker seeds; results are mean +- std over them, and each
            row is paired with DCNv2 alone on the same seed.
        train_samples: train on this many training samples (a random
            subset drawn anew per seed, the same for every row of that
            seed), `None` for all.
        tiers: ranker feature sets (`marc_keras.config.ranker_tier.TIERS`):
            "kar" (KAR's released features, the headline) and "full".
        adaptor_input_dropout, adaptor_expert_dropout, adaptor_input_noise,
        adaptor_weight_decay, adaptor_user_dim: the vector adaptors'
            regularisation for rows without an entry in `row_adaptors`
            (the fields of `AdaptorSetting`).
        row_adaptors: row name -> table of `AdaptorSetting` fields, the
            whole setting of that row (fields left out are off). In TOML:
            `[evaluate.row_adaptors.random]` with `input_dropout = 0.5`.
        ranker: the CTR model (`RANKERS`); its row without vectors is named
            after it. The adaptor settings and the learning rate were chosen
            for DCNv2 (`benchmarks/ranker_zoo.py` chooses each ranker's own
            learning rate on validation users).
        cold_item_share: share of the items with interactions held out as
            cold items (ColdRec's protocol, `marc_keras.data.cold_items`), 0
            for none. Their pairs leave every training split, MARC's
            included, so a run is fit for the cold-item tables only when it
            was trained with the same share; the re-ranking and retrieval
            tables then judge validation and test users on cold items only.
            The CTR table needs 0.
    """

    max_epochs: int = 10
    patience: int = 2
    # Chosen on validation users for DCNv2 alone (kar tier, all rows, seed 0):
    # learning rates 1e-3 / 3e-3 / 1e-2 at batch 4096 gave validation AUC
    # 0.7940 / 0.7943 / 0.7935 (benchmarks/results/downstream-v2-ml-1m-half.json).
    batch_size: int = 4096
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    num_experts: int = 3
    # Chosen on validation users for DCNv2 alone (seed 0, all rows, lr 3e-3):
    # cross rank full / 64 / 32 / 16 gave validation AUC 0.7943 / 0.7939 /
    # 0.7939 / 0.7940 (kar) and 0.8053 / 0.8057 / 0.8056 / 0.8060 (full);
    # 16 is the lowest rank within 0.001 of the best on both tiers.
    cross_projection_dim: int | None = 16
    seeds: tuple[int, ...] = (0, 1, 2)
    train_samples: int | None = None
    tiers: tuple[str, ...] = ("kar", "full")
    # Chosen on validation users (downstream v3 grid: `python
    # benchmarks/downstream_v3.py grid`, kar tier, seed 0, all rows; input dropout
    # {0, 0.2, 0.5} x input noise {0, 0.5} x adaptor L2 {0, 1e-3}): the generic
    # setting is the best mean validation AUC over the six text rows (frozen,
    # frozen-user-only, frozen-item-only, pca-128, marc-o, marc-c), 0.7943 against
    # 0.7828 with all off; ROW_ADAPTORS holds each reference row's own winner.
    # All off (0.0 and None) is the v2 ranker.
    adaptor_input_dropout: float = 0.5
    adaptor_expert_dropout: float = 0.0
    adaptor_input_noise: float = 0.0
    adaptor_weight_decay: float = 1e-3
    adaptor_user_dim: int | None = None
    row_adaptors: dict = dataclasses.field(default_factory=lambda: copy.deepcopy(ROW_ADAPTORS))
    cold_item_share: float = 0.0
    ranker: str = "dcnv2"

    def adaptor_setting(self, row: str | None = None) -> AdaptorSetting:
        """The `AdaptorSetting` a representation row trains with."""
        if row in self.row_adaptors:
            return AdaptorSetting(**self.row_adaptors[row])
        return AdaptorSetting(
            **{
                field.name: getattr(self, f"adaptor_{field.name}")
                for field in dataclasses.fields(AdaptorSetting)
            }
        )

    def __post_init__(self):
        # Named as config keys: these settings are the `[evaluate]` table.
        for name in ("max_epochs", "batch_size", "num_experts"):
            check.whole_number(f"evaluate.{name}", getattr(self, name), minimum=1)
        check.whole_number("evaluate.patience", self.patience, minimum=0)
        check.real_number("evaluate.learning_rate", self.learning_rate, above=0)
        check.real_number("evaluate.weight_decay", self.weight_decay, minimum=0)
        check.whole_numbers("evaluate.seeds", self.seeds, minimum=0, allow_empty=False)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"evaluate.seeds must not repeat a seed; got {list(self.seeds)}.")
        check.whole_number(
            "evaluate.cross_projection_dim", self.cross_projection_dim, minimum=1, optional=True
        )
        check.whole_number("evaluate.train_samples", self.train_samples, minimum=1, optional=True)
        if not self.tiers:
            raise ValueError(f"evaluate.tiers needs at least one of {list(TIERS)}; got [].")
        for tier in self.tiers:
            check.choice("evaluate.tiers", tier, tuple(TIERS))
        if len(set(self.tiers)) != len(self.tiers):
            raise ValueError(f"evaluate.tiers must not repeat a tier; got {list(self.tiers)}.")
        check.real_number(
            "evaluate.cold_item_share", self.cold_item_share, minimum=0.0, below=1.0,
            why=" (a share of the items; 0 turns cold items off)",
        )  # fmt: skip
        check.choice("evaluate.ranker", self.ranker, RANKERS)
        self.adaptor_setting().check("evaluate.adaptor_")
        self._check_row_adaptors()

    def _check_row_adaptors(self):
        if not isinstance(self.row_adaptors, dict):
            raise ValueError(
                "evaluate.row_adaptors must be a table of row name -> setting, e.g. "
                f"{{random = {{input_dropout = 0.5}}}}; got {self.row_adaptors!r}."
            )
        valid = [field.name for field in dataclasses.fields(AdaptorSetting)]
        for row, setting in self.row_adaptors.items():
            key = f"evaluate.row_adaptors.{row}"
            if not isinstance(setting, dict):
                raise ValueError(f"{key} must be a table of {', '.join(valid)}; got {setting!r}.")
            for name in setting:
                if name not in valid:
                    raise ValueError(
                        f"unknown key '{key}.{name}'; valid keys are {', '.join(valid)}."
                    )
            AdaptorSetting(**setting).check(f"{key}.")
