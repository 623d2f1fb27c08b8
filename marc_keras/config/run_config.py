"""A MARC run's settings as data: one TOML/JSON file, with command-line overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterable
from pathlib import Path

from marc_keras.config import config_checks as check
from marc_keras.config.downstream_config import DownstreamConfig

DATASETS = ("movielens", "files")
TEXT_HISTORY_ORDERS = ("newest_first", "oldest_first")
# The same names as `marc_keras.layers.token_pooling.POOLING_MODES`,
# `marc_keras.models.marc.OBJECTIVES` and `HSIC_ROWS`, `marc_keras.losses.hsic.HSIC_SCALES`
# and `marc_keras.models.cross_fitted_heads.HOLDOUTS` (a test keeps them equal);
# spelled out here so that reading a config imports neither Keras nor the models.
POOLING_MODES = ("mean", "last", "cls")
OBJECTIVES = ("bce", "cosine_bce", "cosine", "contrastive", "aoe", "mrl")
HSIC_SCALES = ("normalised", "trace")
CROSS_FIT_HOLDOUTS = ("all-folds", "fold-average")
HSIC_ROWS = ("pairs", "distinct")


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Where interactions come from and how users are split (DESIGN.md Sec. 4).

    Args:
        dataset: "movielens" (ML-1M files) or "files" (bring your own
            interactions / items / users tables, CSV or parquet).
        data_dir: ML-1M directory; `None` uses `MARC_KERAS_ML1M_DIR` or the
            download cache.
        interactions: interactions table, for `dataset = "files"`.
        items: items table, for `dataset = "files"`.
        users: optional users table, for `dataset = "files"`.
        templates: text templates (see `TextTemplates.from_dict`); empty
            uses the dataset's defaults.
        seed: seed of the user split.
        validation_fraction: share of users for validation, in (0, 1).
        test_fraction: share of users for test, in (0, 1).
        max_text_history: most history items in a user's text.
        text_history_order: "newest_first" (the text half's most recent
            items first, as many as fit `model.max_length`) or
            "oldest_first" (the order before v2; the tokenizer then cuts
            the most recent items of long texts).
        encoding: text encoding of CSV tables (`dataset = "files"`), e.g.
            "utf-8" (the default), "latin-1" or "cp1252". MovieLens `.dat`
            files are always latin-1.
    """

    dataset: str = "movielens"
    data_dir: str | None = None
    interactions: str | None = None
    items: str | None = None
    users: str | None = None
    templates: dict = dataclasses.field(default_factory=dict)
    seed: int = 42
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    max_text_history: int = 30
    text_history_order: str = "newest_first"
    encoding: str = "utf-8"

    def __post_init__(self):
        check.choice("data.dataset", self.dataset, DATASETS)
        if self.dataset == "files" and not (self.interactions and self.items):
            raise ValueError(
                "data.dataset = 'files' needs data.interactions and data.items "
                "(CSV or parquet paths); data.users is optional."
            )
        check.whole_number("data.seed", self.seed, minimum=0)
        for name in ("validation_fraction", "test_fraction"):
            check.real_number(f"data.{name}", getattr(self, name), above=0, below=1)
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                "data.validation_fraction + data.test_fraction must be < 1 to leave training "
                f"users; got {self.validation_fraction} + {self.test_fraction}."
            )
        check.whole_number("data.max_text_history", self.max_text_history, minimum=0)
        check.choice("data.text_history_order", self.text_history_order, TEXT_HISTORY_ORDERS)
        check.text_encoding("data.encoding", self.encoding)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The MARC model (paper defaults; `preset = None` is all-MiniLM-L6-v2).

    Args:
        preset: keras-hub preset or Hugging Face checkpoint directory.
        lora_rank: LoRA rank; 0 freezes the backbone.
        pooling: "mean", "last" or "cls".
        max_length: maximum tokens per text.
        compressed_dim: width of MARC-C vectors.
        compression_hidden_units: hidden sizes of the compression network.
        matching_hidden_units: hidden sizes of the matching network.
        share_compression: one compression network for users and items.
        hsic_weight: lambda of the HSIC terms.
        hsic_scale: "normalised" (tr(K H L H) / (B - 1)^2) or "trace"
            (unnormalised, (B - 1)^2 times larger at the same lambda).
        hsic_bandwidth: a fixed Gaussian bandwidth for the HSIC kernels, or
            unset for each batch's median distance.
        hsic_rows: "pairs" (HSIC over the batch's pairs) or "distinct" (over
            its distinct texts, each user once: with `items_per_user = 16`
            a 64-pair batch holds 4 users, each counted 16 times otherwise).
        explicit_interactions: feed c_u * c_i to the matching network.
        objective: training objective, one of `marc_keras.models.marc.OBJECTIVES`
            ("bce" is MARC; the rest serve baselines and ablations).
        mrl_prefixes: nested prefix widths, for objective "mrl".
        reconstruction_weight: weight of reconstructing r from c (ESE).
        frozen_prefix_layers: k > 0 trains LoRA only above the first k
            blocks and caches each training text's hidden states after
            them once, so training runs only the blocks above. A deviation
            from MARC (the lower layers cannot adapt); off (0) by default.
    """

    preset: str | None = None
    lora_rank: int = 8
    pooling: str = "mean"
    max_length: int = 128
    compressed_dim: int = 128
    compression_hidden_units: tuple[int, ...] = (256,)
    matching_hidden_units: tuple[int, ...] = (128,)
    share_compression: bool = True
    hsic_weight: float = 0.01
    hsic_scale: str = "normalised"
    hsic_bandwidth: float | None = None
    hsic_rows: str = "pairs"
    explicit_interactions: bool = True
    objective: str = "bce"
    mrl_prefixes: tuple[int, ...] = (16, 32, 64)
    reconstruction_weight: float = 0.0
    frozen_prefix_layers: int = 0

    def __post_init__(self):
        check.whole_number("model.lora_rank", self.lora_rank, minimum=0)
        check.whole_number("model.frozen_prefix_layers", self.frozen_prefix_layers, minimum=0)
        check.choice("model.pooling", self.pooling, POOLING_MODES)
        check.whole_number("model.max_length", self.max_length, minimum=1)
        check.whole_number("model.compressed_dim", self.compressed_dim, minimum=1)
        check.whole_numbers(
            "model.compression_hidden_units", self.compression_hidden_units, minimum=1
        )
        check.whole_numbers("model.matching_hidden_units", self.matching_hidden_units, minimum=1)
        check.real_number("model.hsic_weight", self.hsic_weight, minimum=0)
        check.choice("model.hsic_scale", self.hsic_scale, HSIC_SCALES)
        check.choice("model.hsic_rows", self.hsic_rows, HSIC_ROWS)
        if self.hsic_bandwidth is not None:
            check.real_number("model.hsic_bandwidth", self.hsic_bandwidth, above=0)
        check.choice("model.objective", self.objective, OBJECTIVES)
        check.whole_numbers("model.mrl_prefixes", self.mrl_prefixes, minimum=1)
        prefixes = list(self.mrl_prefixes)
        if self.objective == "mrl" and (
            not prefixes or prefixes != sorted(set(prefixes)) or prefixes[-1] >= self.compressed_dim
        ):
            raise ValueError(
                "model.mrl_prefixes must be increasing widths below model.compressed_dim "
                f"({self.compressed_dim}) for objective 'mrl'; got {prefixes}."
            )
        check.real_number("model.reconstruction_weight", self.reconstruction_weight, minimum=0)


LEARNING_RATE_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainingSection:
    """How MARC is trained.

    Args:
        train_samples: CTR samples drawn from training users.
        validation_samples: CTR samples drawn from validation users.
        test_samples: CTR samples drawn from test users for the final report.
        batch_size: pairs per step (HSIC needs several dozen).
        epochs: passes over the training sample.
        learning_rate: AdamW learning rate (the peak, under a schedule).
        learning_rate_schedule: `"constant"`, or `"cosine"`: a linear warm-up
            over `warmup_steps`, then a cosine decay to zero at the last step
            of the last epoch (steps as `model.fit` counts them, so a resumed
            run continues the same curve).
        warmup_steps: steps of linear warm-up from zero (cosine only).
        weight_decay: AdamW weight decay.
        seed: seed of sampling, initialisation and shuffling.
        threads: torch CPU threads; `None` leaves torch's default.
        checkpoint_steps: steps between mid-epoch checkpoints; a killed
            `fit` loses at most this many steps (100 steps of 32 MiniLM
            pairs are about five minutes on a 2-core CPU).
        items_per_user: fill batches with chunks of up to this many
            labelled items of one user, so a long user text is encoded once
            per that many pairs (about `batch_size // items_per_user` users
            a batch); `None` draws batches of pairs at random. Either way each distinct text of a
            batch is encoded once (see `marc_keras.pair_batches`).
        head_warmup_epochs: before LoRA training, train the compression and
            matching networks alone for up to this many epochs over the
            training pairs, on the frozen backbone's vectors computed once
            per distinct text (cheap: no backbone pass per step), keeping the
            epoch with the best validation AUC; 0 (default) skips it. Fine-
            tuning then starts from heads that already score pairs instead
            of random ones (linear probing, then fine-tuning: Kumar et al.,
            ICLR 2022). An addition to MARC's recipe, which trains
            everything end to end from random heads (Sec. 3).
        head_warmup_samples: train the head warm-up on this many pairs of
            training users of its own (drawn with `seed`) instead of the
            run's `train_samples`: their frozen vectors are read from
            `frozen-vectors.npz`, every user and item encoded once, which
            `evaluate` reuses, so heads can see many more pairs than LoRA
            trains on at no extra backbone cost; `None` (default) warms up on
            the run's training pairs. Needs `head_warmup_epochs`.
        cross_fit_folds: K >= 2 also writes `marc-c-cross-fit` vectors
            (`MARCRun.encode_vectors`, a downstream row): K heads trained as
            the head warm-up trains (`head_warmup_epochs`, which must be set)
            on the trained backbone's vectors (MARC-O) of K-1 folds of the
            training users each, every fold's users encoded by the heads that
            never saw their pairs (`CrossFittedHeads`); `None` (default) skips
            it. Only the heads are cross-fitted: a LoRA-tuned backbone saw
            every training user. An addition to MARC (issue "MARC-C must beat
            PCA", cause 2).
        cross_fit_holdout: how cross-fitting encodes validation and test
            users: "all-folds" (heads trained on every fold) or "fold-average"
            (the mean of the K fold heads' vectors, mapped into that space).
    """

    train_samples: int = 2048
    validation_samples: int = 512
    test_samples: int = 1024
    batch_size: int = 32
    epochs: int = 1
    learning_rate: float = 3e-4
    learning_rate_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.01
    seed: int = 0
    threads: int | None = None
    checkpoint_steps: int = 100
    items_per_user: int | None = None
    steps_per_epoch: int | None = None
    head_warmup_epochs: int = 0
    head_warmup_samples: int | None = None
    cross_fit_folds: int | None = None
    cross_fit_holdout: str = "all-folds"

    def __post_init__(self):
        for name in ("train_samples", "validation_samples", "test_samples", "epochs"):
            check.whole_number(f"training.{name}", getattr(self, name), minimum=1)
        check.whole_number(
            "training.batch_size",
            self.batch_size,
            minimum=2,
            why=" (HSIC and the in-batch losses compare the pairs of a batch)",
        )
        check.real_number("training.learning_rate", self.learning_rate, above=0)
        check.choice(
            "training.learning_rate_schedule", self.learning_rate_schedule, LEARNING_RATE_SCHEDULES
        )
        check.whole_number("training.warmup_steps", self.warmup_steps, minimum=0)
        if self.warmup_steps and self.learning_rate_schedule == "constant":
            raise ValueError(
                f"training.warmup_steps ({self.warmup_steps}) needs "
                'training.learning_rate_schedule = "cosine"; the constant rate has no warm-up.'
            )
        check.real_number("training.weight_decay", self.weight_decay, minimum=0)
        check.whole_number("training.seed", self.seed, minimum=0)
        check.whole_number("training.threads", self.threads, minimum=1, optional=True)
        check.whole_number("training.checkpoint_steps", self.checkpoint_steps, minimum=1)
        check.whole_number("training.head_warmup_epochs", self.head_warmup_epochs, minimum=0)
        check.whole_number("training.items_per_user", self.items_per_user, minimum=1, optional=True)
        check.whole_number(
            "training.cross_fit_folds",
            self.cross_fit_folds,
            minimum=2,
            optional=True,
            why=" (K folds of training users, each encoded by heads trained on the others)",
        )
        check.choice("training.cross_fit_holdout", self.cross_fit_holdout, CROSS_FIT_HOLDOUTS)
        check.whole_number(
            "training.head_warmup_samples", self.head_warmup_samples, minimum=1, optional=True
        )
        if self.head_warmup_samples and not self.head_warmup_epochs:
            raise ValueError(
                "training.head_warmup_samples needs training.head_warmup_epochs > 0: set how "
                "many epochs the head warm-up trains, or remove head_warmup_samples."
            )
        if self.cross_fit_folds and not self.head_warmup_epochs:
            raise ValueError(
                "training.cross_fit_folds needs training.head_warmup_epochs > 0: the "
                "cross-fitted heads train for that many epochs, as the head warm-up does."
            )
        check.whole_number(
            "training.steps_per_epoch", self.steps_per_epoch, minimum=1, optional=True
        )
        if self.items_per_user is not None and self.items_per_user > self.batch_size:
            raise ValueError(
                f"training.items_per_user ({self.items_per_user}) exceeds training.batch_size "
                f"({self.batch_size}): a batch holds chunks of up to items_per_user pairs of "
                "one user; lower items_per_user or raise batch_size."
            )


SECTIONS = {
    "data": DataSection,
    "model": ModelSection,
    "training": TrainingSection,
    "evaluate": DownstreamConfig,
}
# The sections that define what `fit` trains; `evaluate` settings can change
# without making a run directory "another run".
FIT_SECTIONS = ("data", "model", "training")


def _suggest(name, options):
    close = difflib.get_close_matches(name, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _coerce(value, annotation, key):
    """Converts a parsed config value to the field's declared type."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if value is None and type(None) in arguments:
        return None
    if origin in (typing.Union, types.UnionType):
        annotation = next(a for a in arguments if a is not type(None))
        origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"Config key '{key}' takes a list like [256]; got {value!r}.")
        return tuple(_coerce(item, arguments[0], key) for item in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"Config key '{key}' takes true or false; got {value!r}.")
    if annotation in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Config key '{key}' takes a number; got {value!r}.")
        if annotation is int and float(value) != int(value):
            raise ValueError(f"Config key '{key}' takes a whole number; got {value!r}.")
        return annotation(value)
    if annotation is str and not isinstance(value, str):
        raise ValueError(f"Config key '{key}' takes a string; got {value!r}.")
    if annotation is dict and not isinstance(value, dict):
        raise ValueError(f"Config key '{key}' takes a table; got {value!r}.")
    return value


def _parse_override_value(text):
    # TOML syntax for the value, so `epochs=2`, `preset="/m"`, `units=[64]`
    # work; a bare word that is not TOML is taken as a string.
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def sections_from_dict(values: dict, sections: dict[str, type], source: str) -> dict:
    """Builds each section dataclass from nested dicts, checking every key and type.

    Args:
        values: `{section: {key: value}}` as parsed from TOML or JSON.
        sections: section name -> dataclass.
        source: the file name, for messages.

    Returns:
        `{section: instance}` for the sections present.
    """
    if not isinstance(values, dict):
        raise ValueError(
            f"{source}: expected tables {list(sections)}; got {type(values).__name__}."
        )
    built = {}
    for section_name, section_values in values.items():
        if section_name not in sections:
            raise ValueError(
                f"{source}: unknown section '{section_name}'; valid sections are "
                f"{', '.join(sections)}.{_suggest(section_name, sections)}"
            )
        if not isinstance(section_values, dict):
            raise ValueError(f"{source}: '{section_name}' must be a table of keys.")
        section_type = sections[section_name]
        fields = {field.name: field for field in dataclasses.fields(section_type)}
        hints = typing.get_type_hints(section_type)
        kwargs = {}
        for key, value in section_values.items():
            dotted = f"{section_name}.{key}"
            if key not in fields:
                raise ValueError(
                    f"{source}: unknown key '{dotted}'; valid keys in [{section_name}] "
                    f"are {', '.join(fields)}.{_suggest(key, fields)}"
                )
            kwargs[key] = _coerce(value, hints[key], dotted)
        try:
            # Each section checks its ranges and choices in __post_init__.
            built[section_name] = section_type(**kwargs)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
    return built


def packaged_configs() -> dict[str, Path]:
    """The configs the package carries (the repository's `configs/`), name -> file."""
    from importlib import resources

    folder = resources.files("marc_keras.configs")
    return {
        entry.name.removesuffix(".toml"): Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    }


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file: `path` itself, or the packaged config of that name (`demo`, `marc-scale`).

    A file path wins over a packaged name, so a local `demo` file is read as it is.

    Raises:
        FileNotFoundError: neither a file nor a packaged name; lists the names.
    """
    path = Path(path)
    if path.is_file():
        return path
    packaged = packaged_configs()
    if path.name == str(path) and path.stem in packaged and path.suffix in ("", ".toml"):
        return packaged[path.stem]
    raise FileNotFoundError(
        f"Config file '{path}' does not exist, and it is not a packaged config name "
        f"({', '.join(sorted(packaged))}); give a file path or one of those names."
    )


def read_config_values(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> dict:
    """The nested dict of a TOML or JSON config file (or `{}`), with overrides applied.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file does not parse, or an override is malformed.
    """
    values = {}
    if path is not None:
        path = resolve_config_path(path)
        text = path.read_text("utf-8")
        try:
            values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"Config file '{path}' does not parse: {error}") from error
    for override in overrides:
        dotted, separator, text = override.partition("=")
        section, _, key = dotted.strip().partition(".")
        if not separator or not key:
            raise ValueError(
                f"Override '{override}' must look like section.key=value, "
                "for example training.epochs=2."
            )
        values.setdefault(section, {})[key] = _parse_override_value(text.strip())
    return values


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """All settings of a `marc-keras fit` run, in three sections.

    A config file is TOML (or JSON) with tables `[data]`, `[model]`,
    `[training]` and `[evaluate]` (the downstream DCNv2, see
    `DownstreamConfig`); any key left out keeps its default. Unknown sections or
    keys are errors that name the key and the closest valid one; so are values
    out of range (`training.batch_size = -4`) or not among a key's choices.

    Args:
        data: a `DataSection`.
        model: a `ModelSection`.
        training: a `TrainingSection`.
        evaluate: a `DownstreamConfig`.

    Example:
    >>> config = RunConfig.from_file("configs/demo.toml", ["training.epochs=2"])
    >>> config.training.epochs
    2
    """

    data: DataSection = dataclasses.field(default_factory=DataSection)
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    training: TrainingSection = dataclasses.field(default_factory=TrainingSection)
    evaluate: DownstreamConfig = dataclasses.field(default_factory=DownstreamConfig)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> RunConfig:
        """Builds a config from nested dicts, checking every key and type."""
        return cls(**sections_from_dict(values, SECTIONS, source))

    @classmethod
    def from_file(
        cls, path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
    ) -> RunConfig:
        """Reads a TOML or JSON file (or the defaults) and applies overrides.

        Args:
            path: a `.toml` or `.json` file, or `None` for the defaults.
            overrides: strings `section.key=value`, value in TOML syntax.

        Returns:
            A `RunConfig`.

        Raises:
            FileNotFoundError: `path` does not exist.
            ValueError: the file does not parse, or a key or value is invalid.
        """
        return cls.from_dict(read_config_values(path, overrides), source=str(path or "config"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **sections: object) -> RunConfig:
        return dataclasses.replace(self, **sections)
