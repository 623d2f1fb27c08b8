"""How the downstream DCNv2 is trained: the `[evaluate]` table of a run config."""

import dataclasses

from marc_keras.config import config_checks as check


@dataclasses.dataclass(frozen=True)
class DownstreamConfig:
    """How the downstream DCNv2 is trained for each representation and seed.

    Args:
        max_epochs: epoch limit; early stopping on validation AUC usually ends sooner.
        patience: epochs without validation AUC gain before stopping.
        batch_size: samples per step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        num_experts: experts per vector adaptor.
        seeds: ranker seeds; results are mean +- std over them.
        train_samples: train on this many training samples (a fixed random
            subset, the same for every representation), `None` for all.
    """

    max_epochs: int = 5
    patience: int = 1
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    num_experts: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    train_samples: int | None = None

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
        check.whole_number("evaluate.train_samples", self.train_samples, minimum=1, optional=True)
