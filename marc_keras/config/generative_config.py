"""An L2D run's settings as data: the generative recommender, its memory and its decoders."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

from marc_keras.config import config_checks as check
from marc_keras.config.run_config import DATASETS, read_config_values, sections_from_dict


@dataclasses.dataclass(frozen=True)
class SequenceDataSection:
    """Where interactions come from and how the leave-one-out samples are drawn.

    Args:
        dataset: "movielens" or "files" (bring your own tables).
        data_dir: ML-1M directory; `None` uses `MARC_KERAS_ML1M_DIR` or the cache.
        interactions: interactions table, for `dataset = "files"`.
        items: items table (with the title column), for `dataset = "files"`.
        encoding: text encoding of CSV tables.
        title_field: the items column that holds each item's title.
        history_length: the most history titles in a prompt (BIGRec: 10).
        positives_only: keep only interactions labelled 1.
        train_samples: training windows the LM is fine-tuned on.
        memory_samples: training windows in L2D's memory: the fine-tuning
            windows first, then more windows of training positions (the LM
            has not trained on those, but they are training data, never a
            held-out item). `None`: the fine-tuning windows only.
        validation_users: users whose second-to-last item chooses L2D-L's M.
        test_users: users whose last item is reported.
        seed: sampling seed.
        instruction: the prompt's instruction (BIGRec's MovieLens wording).
        history_prefix: the words before the quoted history titles.
    """

    dataset: str = "movielens"
    data_dir: str | None = None
    interactions: str | None = None
    items: str | None = None
    encoding: str = "utf-8"
    title_field: str = "title"
    history_length: int = 10
    positives_only: bool = False
    train_samples: int = 1024
    memory_samples: int | None = None
    validation_users: int = 300
    test_users: int = 300
    seed: int = 42
    instruction: str = (
        "Given a list of movies the user has watched before, please recommend a new movie "
        "that the user likes to the user."
    )
    history_prefix: str = "The user has watched the following movies before: "

    def __post_init__(self):
        check.choice("data.dataset", self.dataset, DATASETS)
        if self.dataset == "files" and not (self.interactions and self.items):
            raise ValueError(
                "data.dataset = 'files' needs data.interactions and data.items (CSV or parquet)."
            )
        check.text_encoding("data.encoding", self.encoding)
        for name in ("history_length", "train_samples", "validation_users", "test_users"):
            check.whole_number(f"data.{name}", getattr(self, name), minimum=1)
        check.whole_number("data.memory_samples", self.memory_samples, minimum=1, optional=True)
        if self.memory_samples is not None and self.memory_samples < self.train_samples:
            raise ValueError(
                f"data.memory_samples ({self.memory_samples}) must be at least "
                f"data.train_samples ({self.train_samples}): the memory holds the fine-tuning "
                "windows and optionally more."
            )
        check.whole_number("data.seed", self.seed, minimum=0)


@dataclasses.dataclass(frozen=True)
class CausalLMSection:
    """The causal LM and its LoRA.

    Args:
        preset: checkpoint directory of a keras-hub causal LM (e.g. the one
            `marc-keras prepare-smollm2` writes). Required.
        lora_rank: LoRA rank on the attention query/value projections.
        lora_alpha: LoRA scale numerator (update scale alpha / rank).
        max_length: the most tokens of prompt plus title; older history
            titles are dropped until a prompt fits.
    """

    preset: str | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    max_length: int = 512

    def __post_init__(self):
        check.whole_number("model.lora_rank", self.lora_rank, minimum=1)
        check.real_number("model.lora_alpha", self.lora_alpha, above=0)
        check.whole_number("model.max_length", self.max_length, minimum=8)


@dataclasses.dataclass(frozen=True)
class GenerativeTrainingSection:
    """How the LM is fine-tuned (next-title cross-entropy).

    Args:
        batch_size: sequences per step.
        epochs: passes over the training windows.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: seed of initialisation and shuffling.
        threads: torch CPU threads; `None` leaves torch's default.
        checkpoint_steps: steps between mid-epoch checkpoints.
    """

    batch_size: int = 8
    epochs: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    threads: int | None = None
    checkpoint_steps: int = 25

    def __post_init__(self):
        for name in ("batch_size", "epochs", "checkpoint_steps"):
            check.whole_number(f"training.{name}", getattr(self, name), minimum=1)
        check.real_number("training.learning_rate", self.learning_rate, above=0)
        check.real_number("training.weight_decay", self.weight_decay, minimum=0)
        check.whole_number("training.seed", self.seed, minimum=0)
        check.whole_number("training.threads", self.threads, minimum=1, optional=True)


@dataclasses.dataclass(frozen=True)
class DecodingSection:
    """The decoders compared and how latency is measured.

    Args:
        beam_width: B of the trie-constrained beam search; its rows report
            K <= B only.
        length_penalties: candidate length penalties of the beam search (a
            finished title scores its summed log-probability / length ** p),
            chosen by NDCG@10 on validation users when there are several;
            the default (0,) is D3's unnormalised sum.
        local_sizes: candidate M of L2D-L, chosen by NDCG@10 on validation users.
        max_new_tokens: the most tokens greedy decoding writes.
        batch_size: users decoded together for the quality figures.
        latency_users: users timed per decoder and batch size; 0 skips the
            timing (e.g. for the extra seeds of a benchmark).
        latency_batch_sizes: batch sizes timed (after one warm-up batch).
    """

    beam_width: int = 10
    length_penalties: tuple[float, ...] = (0.0,)
    local_sizes: tuple[int, ...] = (16, 64, 256, 1024)
    max_new_tokens: int = 32
    batch_size: int = 16
    latency_users: int = 32
    latency_batch_sizes: tuple[int, ...] = (1, 16)

    def __post_init__(self):
        for name in ("beam_width", "max_new_tokens", "batch_size"):
            check.whole_number(f"decoding.{name}", getattr(self, name), minimum=1)
        check.whole_number("decoding.latency_users", self.latency_users, minimum=0)
        check.whole_numbers("decoding.local_sizes", self.local_sizes, minimum=1, allow_empty=False)
        if not self.length_penalties:
            raise ValueError("decoding.length_penalties must not be empty; got [].")
        for penalty in self.length_penalties:
            check.real_number("decoding.length_penalties", penalty, minimum=0)
        check.whole_numbers(
            "decoding.latency_batch_sizes", self.latency_batch_sizes, minimum=1, allow_empty=False
        )


SECTIONS = {
    "data": SequenceDataSection,
    "model": CausalLMSection,
    "training": GenerativeTrainingSection,
    "decoding": DecodingSection,
}
# What the trained model and its memory depend on; decoding settings can change freely.
FIT_SECTIONS = ("data", "model", "training")


@dataclasses.dataclass(frozen=True)
class GenerativeConfig:
    """All settings of a `marc-keras l2d` run: `[data]`, `[model]`, `[training]`, `[decoding]`.

    Read like `RunConfig`: TOML or JSON, keys left out keep their defaults,
    unknown keys and bad values are errors naming the key.

    Example:
    >>> config = GenerativeConfig.from_file("configs/l2d-demo.toml", ["training.epochs=2"])
    >>> config.decoding.beam_width
    10
    """

    data: SequenceDataSection = dataclasses.field(default_factory=SequenceDataSection)
    model: CausalLMSection = dataclasses.field(default_factory=CausalLMSection)
    training: GenerativeTrainingSection = dataclasses.field(
        default_factory=GenerativeTrainingSection
    )
    decoding: DecodingSection = dataclasses.field(default_factory=DecodingSection)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> GenerativeConfig:
        return cls(**sections_from_dict(values, SECTIONS, source))

    @classmethod
    def from_file(
        cls, path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
    ) -> GenerativeConfig:
        """Reads a TOML or JSON file (or the defaults) and applies `section.key=value` overrides."""
        return cls.from_dict(read_config_values(path, overrides), source=str(path or "config"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
