"""One L2D run in a directory: fine-tune the generative LM, build its memory, compare decoders."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from marc_keras.config.generative_config import FIT_SECTIONS, GenerativeConfig
from marc_keras.data import InteractionData, MovieLens
from marc_keras.experiments.marc_run import CONFIG_FILE, refuse_foreign_directory
from marc_keras.generative.beam_search_decoder import BeamSearchDecoder
from marc_keras.generative.cached_decoding_model import CachedDecodingModel
from marc_keras.generative.generative_recommender import TRAINING_INPUTS, GenerativeRecommender
from marc_keras.generative.greedy_grounding_decoder import GreedyGroundingDecoder
from marc_keras.generative.latent_decoder import LatentDecoder
from marc_keras.generative.sequence_batches import SequenceBatches
from marc_keras.generative.sequential_split import SequentialSplit
from marc_keras.generative.title_prompts import PromptTemplate, TitlePrompts, right_padded
from marc_keras.generative.title_trie import TitleTrie
from marc_keras.generative.top_k_metrics import expand_title_groups, hit_rate_and_ndcg
from marc_keras.models.marc_encoder import MARCEncoder
from marc_keras.step_checkpoint import START, StepCheckpoint
from marc_keras.text_tokenizer import TextTokenizer
from marc_keras.utils.atomic_files import write_atomically, write_json
from marc_keras.utils.backend_guard import set_random_seed
from marc_keras.utils.line_progress import LineProgress, count_progress, progress_is_interactive

LORA_FILE = "lora.lora.h5"
KS = (1, 5, 10, 20)
ROWS = ("l2d-g", "l2d-l", "beam", "greedy-grounding", "most-popular")


def load_sequences(config: GenerativeConfig) -> tuple[SequentialSplit, dict[str, str]]:
    """The leave-one-out split and the catalogue's titles (item id -> title)."""
    data = config.data
    if data.dataset == "movielens":
        interactions = MovieLens.load(data.data_dir)
    else:
        interactions = InteractionData.from_files(
            data.interactions, data.items, None, encoding=data.encoding
        )
    items = interactions.items
    if data.title_field not in items.columns:
        raise ValueError(
            f"The items table has no '{data.title_field}' column (it has "
            f"{', '.join(items.columns)}); set data.title_field to the column holding titles."
        )
    titles = dict(zip(items["item_id"].astype(str), items[data.title_field].astype(str)))
    split = SequentialSplit.build(interactions, data.history_length, data.positives_only)
    return split, titles


class L2DRun:
    """A generative recommender's run directory, stage by stage; each stage resumes.

    - `fit`: fine-tunes the LM on `data.train_samples` windows (LoRA,
      next-title loss), with step checkpoints; writes `lora.lora.h5` and
      `fit.json`.
    - `memory`: L2D's memory (prompt states of `data.memory_samples`
      windows and their target items) in `memory/`, chunk by chunk.
    - `evaluate`: L2D-G, L2D-L (M chosen on validation users), trie-constrained
      beam search (its length penalty chosen on validation users), greedy +
      grounding and most-popular on the test users: HR@K, NDCG@K,
      cold-target rate, valid-title share, latency at each batch size; one
      JSON per row in `evaluation/`, then `evaluation.json`.

    Args:
        run_dir: the run directory.
        config: a `GenerativeConfig`.

    Example:
    >>> run = L2DRun.open("runs/l2d", GenerativeConfig.from_file("configs/l2d-demo.toml"))
    >>> run.fit(); run.memory(); report = run.evaluate()
    """

    def __init__(self, run_dir: str | os.PathLike, config: GenerativeConfig) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        if config.model.preset is None:
            raise ValueError(
                "model.preset is not set: point it at a causal LM checkpoint directory, e.g. "
                "the one `marc-keras prepare-smollm2 --output-dir checkpoints/smollm2-135m` writes."
            )
        self._data = None

    @classmethod
    def open(cls, run_dir: str | os.PathLike, config: GenerativeConfig) -> L2DRun:
        """Starts a run in `run_dir`, or resumes the one with the same fit settings.

        Raises:
            ValueError: `run_dir` holds a run whose data, model or training
                settings differ, or a non-empty directory that is not a run.
        """
        run_dir = Path(run_dir)
        config_path = run_dir / CONFIG_FILE
        if config_path.is_file():
            saved = GenerativeConfig.from_dict(json.loads(config_path.read_text())).to_dict()
            wanted = json.loads(json.dumps(config.to_dict()))
            saved = json.loads(json.dumps(saved))
            differences = [
                f"{section}.{key}"
                for section in FIT_SECTIONS
                for key in wanted[section]
                if saved[section][key] != wanted[section][key]
            ]
            if differences:
                raise ValueError(
                    f"Run directory '{run_dir}' holds another run (settings differ in "
                    f"{', '.join(differences)}); choose a new --run-dir or use its settings."
                )
        else:
            refuse_foreign_directory(run_dir)
        run = cls(run_dir, config)
        write_json(config_path, config.to_dict())
        return run

    def _threads(self):
        if self.config.training.threads:
            import torch

            torch.set_num_threads(self.config.training.threads)

    def data(self) -> tuple[SequentialSplit, TitlePrompts, dict]:
        """The split, the prompt builder and the sampled windows / users of each part."""
        if self._data is None:
            split, titles = load_sequences(self.config)
            model = self.config.model
            tokenizer = TextTokenizer.from_preset(model.preset, max_length=model.max_length)
            template = PromptTemplate(self.config.data.instruction, self.config.data.history_prefix)
            prompts = TitlePrompts(tokenizer, titles, template)
            data = self.config.data
            memory = split.sample("train", data.memory_samples or data.train_samples, data.seed)
            samples = {
                "memory": memory,
                "train": memory.iloc[: data.train_samples],
                "validation": split.sample("validation", data.validation_users, data.seed),
                "test": split.sample("test", data.test_users, data.seed),
            }
            self._data = split, prompts, samples
        return self._data

    def build_model(self) -> GenerativeRecommender:
        model = self.config.model
        return GenerativeRecommender.from_preset(
            model.preset,
            lora_rank=model.lora_rank,
            lora_alpha=model.lora_alpha,
            max_length=model.max_length,
        )

    def trained_model(self) -> GenerativeRecommender:
        """The fine-tuned model (the checkpoint plus `lora.lora.h5`), LoRA merged."""
        path = self.run_dir / LORA_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"'{path}' does not exist; run `marc-keras l2d fit --run-dir {self.run_dir}` first."
            )
        model = self.build_model()
        model.backbone.load_lora_weights(path)
        return model.merged()

    def prompt_encoder(self) -> MARCEncoder:
        """The fine-tuned L2D user encoder: prompt -> last-token state (`original`), for ONNX."""
        encoder = MARCEncoder(self.trained_model().backbone, None, name="l2d_prompt_encoder")
        encoder.trainable = False
        return encoder

    def fit(self, log: Callable[[str], object] = print, verbose: int = 1) -> dict:
        """Fine-tunes (or resumes) the LM; returns what `fit.json` holds."""
        fit_path = self.run_dir / "fit.json"
        if fit_path.is_file() and (self.run_dir / LORA_FILE).is_file():
            log(f"{self.run_dir} is already fine-tuned; see {fit_path}")
            return json.loads(fit_path.read_text())
        training = self.config.training
        self._threads()
        set_random_seed(training.seed)
        _, prompts, samples = self.data()
        train = samples["train"]
        arrays = prompts.training_arrays(train["history"].tolist(), train["target"].tolist())
        model = self.build_model()
        model.compile(
            optimizer=keras.optimizers.AdamW(
                training.learning_rate, weight_decay=training.weight_decay
            )
        )
        checkpoint_dir = self.run_dir / "checkpoint"
        state = dict(START)
        if StepCheckpoint.read_state(checkpoint_dir) is not None:
            model({name: arrays[name][:1] for name in TRAINING_INPUTS})
            state = StepCheckpoint.restore(model, checkpoint_dir)
            log(f"resuming at epoch {state['epoch'] + 1}, step {state['step']}")
        batches = SequenceBatches(
            arrays, training.batch_size, training.seed, state["epoch"], state["step"]
        )
        interactive = bool(verbose) and progress_is_interactive()
        started = time.perf_counter()
        if state["epoch"] < training.epochs:
            model.fit(
                batches,
                initial_epoch=state["epoch"],
                epochs=training.epochs,
                shuffle=False,
                callbacks=[
                    batches.epoch_callback(),
                    StepCheckpoint(checkpoint_dir, training.checkpoint_steps, state),
                    keras.callbacks.CSVLogger(str(self.run_dir / "history.csv"), append=True),
                    *([] if interactive or not verbose else [LineProgress(log)]),
                ],
                verbose=1 if interactive else 0,
            )
        fit_s = time.perf_counter() - started
        write_atomically(self.run_dir / LORA_FILE, model.backbone.save_lora_weights)
        tokens = int(arrays["padding_mask"].sum())
        report = {
            "train_samples": len(train),
            "epochs": training.epochs,
            "tokens_per_sample": tokens / len(train),
            "fit_s": fit_s,
            "resumed_from_step": state["global_step"],
        }
        write_json(fit_path, report)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return report

    def memory(self, model: GenerativeRecommender | None = None, log=print) -> LatentDecoder:
        """Builds (or resumes, or reads) L2D's memory of training-sample states."""
        _, prompts, samples = self.data()
        memory = samples["memory"]
        directory = self.run_dir / "memory"
        timing_path = directory / "build.json"
        if not timing_path.is_file():
            self._threads()
            model = model or self.trained_model()
            histories = memory["history"].tolist()

            def encode(rows):
                tokens = prompts.prompt_arrays([histories[row] for row in rows])
                return model.prompt_states(tokens, batch_size=self.config.decoding.batch_size)

            started = time.perf_counter()
            LatentDecoder.build_memory(
                encode, len(memory), prompts.item_indices(memory["target"]), directory, log=log
            )
            write_json(timing_path, {"memory_s": time.perf_counter() - started})
        return LatentDecoder.load(directory, len(prompts.item_ids))

    def evaluate(self, log: Callable[[str], object] = print) -> dict:
        """Every decoder's test figures; rows already in `evaluation/` are kept."""
        self._threads()
        split, prompts, samples = self.data()
        decoding = self.config.decoding
        model = self.trained_model()
        latent = self.memory(model, log)
        rows_dir = self.run_dir / "evaluation"
        test = samples["test"]
        test_prompts = prompts.prompt_ids(test["history"].tolist())
        targets = prompts.item_indices(test["target"])
        builds = json.loads((self.run_dir / "memory" / "build.json").read_text())

        def states_of(prompt_ids):
            return model.prompt_states(
                right_padded(prompt_ids, prompts.tokenizer.pad_id), batch_size=len(prompt_ids)
            )

        def rank_users(rank_batch, prompt_ids, width, label):
            progress = count_progress(len(prompt_ids), f"users ({label})", log)
            ranked = []
            for start in range(0, len(prompt_ids), decoding.batch_size):
                batch = prompt_ids[start : start + decoding.batch_size]
                ranked.append(rank_batch(batch))
                progress(len(batch))
            return _full_width(np.concatenate(ranked), width)

        def run_row(name, rank_batch, ks, extra=None, settings=None):
            """A row's test figures; a stored row is reused only if it was decoded with
            the same `settings` (the decoding settings it depends on, which may
            change between evaluations of one run)."""
            path = rows_dir / f"{name}.json"
            settings = settings or {}
            if path.is_file():
                row = json.loads(path.read_text())
                if all(row.get(key) == value for key, value in settings.items()):
                    return row
            log(f"{name}: decoding {len(test_prompts)} test users")
            ranked = rank_users(rank_batch, test_prompts, max(ks), name)
            row = {**hit_rate_and_ndcg(ranked, targets, ks), **(extra() if extra else {})}
            row.update(self._latency(rank_batch, test_prompts))
            row.update(settings)
            write_json(path, row)
            return row

        report = {"rows": {}}
        # L2D-L's M is chosen on validation users, never on test users.
        validation = samples["validation"]
        validation_states = model.prompt_states(
            prompts.prompt_arrays(validation["history"].tolist()), decoding.batch_size
        )
        validation_targets = prompts.item_indices(validation["target"])
        choice = {
            int(size): hit_rate_and_ndcg(
                _full_width(latent.rank(validation_states, 20, local_size=size), 20),
                validation_targets,
                (10,),
            )["ndcg@10"]
            for size in decoding.local_sizes
        }
        local_size = _best_on_validation(choice)
        log(f"L2D-L: M = {local_size} (validation NDCG@10 by M: {choice})")
        report["rows"]["l2d-g"] = run_row(
            "l2d-g", lambda batch: latent.rank(states_of(batch), 20), KS
        )
        report["rows"]["l2d-l"] = run_row(
            "l2d-l",
            lambda batch: latent.rank(states_of(batch), 20, local_size=local_size),
            KS,
            settings={"local_size": local_size},
        )

        started = time.perf_counter()
        trie = TitleTrie(prompts.title_sequences, prompts.eos_id)
        trie_s = time.perf_counter() - started
        decoding_model = CachedDecodingModel(model, trie.depth, prompts.eos_id)

        def beam_ranker(length_penalty):
            beam = BeamSearchDecoder(
                decoding_model, trie, decoding.beam_width, length_penalty=length_penalty
            )

            def rank_batch(batch):
                results = beam.decode(batch)
                groups = [[trie.titles_at(leaf)[0] for leaf, _ in result] for result in results]
                return expand_title_groups(groups, prompts.group_items, decoding.beam_width)

            return rank_batch

        # The beam's length penalty is chosen on validation users too; each
        # candidate's figure is stored (per beam width), since a beam pass is
        # the slowest step.
        penalty_choice = {}
        if len(decoding.length_penalties) > 1:
            choice_path = rows_dir / f"beam-b{decoding.beam_width}-validation.json"
            stored = json.loads(choice_path.read_text()) if choice_path.is_file() else {}
            validation_prompts = prompts.prompt_ids(validation["history"].tolist())
            for penalty in decoding.length_penalties:
                if str(penalty) not in stored:
                    log(f"beam: length penalty {penalty} on {len(validation_prompts)} users")
                    ranked = rank_users(
                        beam_ranker(penalty), validation_prompts, 10, f"beam, penalty {penalty}"
                    )
                    stored[str(penalty)] = hit_rate_and_ndcg(ranked, validation_targets, (10,))[
                        "ndcg@10"
                    ]
                    write_json(choice_path, stored)
                penalty_choice[penalty] = stored[str(penalty)]
            length_penalty = _best_on_validation(penalty_choice)
            log(f"beam: length penalty {length_penalty} (validation NDCG@10: {penalty_choice})")
        else:
            length_penalty = decoding.length_penalties[0]
        report["rows"]["beam"] = run_row(
            "beam",
            beam_ranker(length_penalty),
            tuple(k for k in KS if k <= decoding.beam_width),
            settings={"beam_width": decoding.beam_width, "length_penalty": length_penalty},
        )

        started = time.perf_counter()
        greedy = GreedyGroundingDecoder(
            CachedDecodingModel(model, decoding.max_new_tokens, prompts.eos_id),
            lambda sequences: model.prompt_states(
                right_padded(list(sequences), prompts.tokenizer.pad_id), batch_size=64
            ),
            prompts.title_sequences,
            decoding.max_new_tokens,
            # One call: prompt_states batches the titles by length itself.
            batch_size=len(prompts.title_sequences),
        )
        grounding_s = time.perf_counter() - started
        valid = []

        def greedy_batch(batch):
            generated, groups = greedy.decode(batch, 20)
            valid.extend(greedy.is_title(tokens) for tokens in generated)
            return expand_title_groups(groups, prompts.group_items, 20)

        report["rows"]["greedy-grounding"] = run_row(
            "greedy-grounding",
            greedy_batch,
            KS,
            # The quality pass comes first; the latency passes append after it.
            extra=lambda: {"valid_title_share": float(np.mean(valid[: len(test_prompts)]))},
            settings={"max_new_tokens": decoding.max_new_tokens},
        )

        popularity = np.bincount(
            prompts.item_indices(split.train["target"]), minlength=len(prompts.item_ids)
        )
        popular = np.argsort(-popularity, kind="stable")[:20]
        report["rows"]["most-popular"] = hit_rate_and_ndcg(
            _full_width(np.broadcast_to(popular, (len(targets), len(popular))), 20), targets, KS
        )

        fit = json.loads((self.run_dir / "fit.json").read_text())
        report.update(
            {
                "local_size": local_size,
                "validation_ndcg@10_by_local_size": choice,
                "beam_length_penalty": length_penalty,
                "validation_ndcg@10_by_length_penalty": penalty_choice,
                "cold_target_rate": latent.cold_rate(targets),
                "speedup_vs_beam_b1": _speedup(report["rows"]["beam"], report["rows"]["l2d-l"]),
                "train_samples": fit["train_samples"],
                "memory_samples": len(latent.states),
                "test_users": len(test_prompts),
                "catalogue_items": len(prompts.item_ids),
                "validation_users": len(validation_states),
                "build_s": {
                    "memory": builds["memory_s"],
                    "trie": trie_s,
                    "grounding_index": grounding_s,
                },
                "fit": fit,
                "config": self.config.to_dict(),
            }
        )
        write_json(self.run_dir / "evaluation.json", report)
        return report

    def _latency(self, rank_batch, prompt_ids: Sequence[Sequence[int]]) -> dict:
        """Milliseconds per user at each batch size, after one warm-up batch."""
        decoding = self.config.decoding
        users = list(prompt_ids[: decoding.latency_users])
        timings = {}
        if not users:
            return timings
        for batch_size in decoding.latency_batch_sizes:
            rank_batch(users[:batch_size])
            started = time.perf_counter()
            for start in range(0, len(users), batch_size):
                rank_batch(users[start : start + batch_size])
            timings[f"ms_per_user_b{batch_size}"] = (
                1000.0 * (time.perf_counter() - started) / len(users)
            )
        return timings


def _best_on_validation(scores):
    """The candidate setting with the best validation score; ties go to the smaller one."""
    return max(scores, key=lambda setting: (scores[setting], -setting))


def _full_width(ranked, width):
    """Pads rankings of a catalogue smaller than `width` with -1: every item is ranked already."""
    if ranked.shape[1] >= width:
        return ranked
    padding = np.full((len(ranked), width - ranked.shape[1]), -1, ranked.dtype)
    return np.concatenate([ranked, padding], axis=1)


def _speedup(slow, fast):
    """Latency ratio at batch 1, `None` when either was not timed."""
    if "ms_per_user_b1" not in slow or "ms_per_user_b1" not in fast:
        return None
    return slow["ms_per_user_b1"] / fast["ms_per_user_b1"]
