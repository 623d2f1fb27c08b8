"""Mid-epoch training checkpoints that a `kill -9` cannot corrupt."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import torch

from marc_keras.utils.atomic_files import write_atomically, write_json

STATE_FILE = "state.json"
SEED_STATE_NAME = "seed_generator_state"
START = {"epoch": 0, "step": 0, "global_step": 0}


def _training_variables(model):
    """Every variable that training changes, keyed by kind and position.

    Not `save_weights`: Keras saves a LoRA layer's kernel merged with its
    factors and leaves the factors out, and it skips the dropout seed
    generators' states; a run resumed from that would train fresh factors
    on a merged kernel and draw other dropout masks. Frozen weights are
    left out: they are what the model was built with. Keys are positions,
    not paths: seed generators and optimizers are numbered per process.
    """
    groups = {
        "model": model.trainable_variables,
        "seed": [variable for variable in model.variables if variable.name == SEED_STATE_NAME],
        "optimizer": model.optimizer.variables,
    }
    return {
        f"{kind}/{index}": variable
        for kind, group in groups.items()
        for index, variable in enumerate(group)
    }


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state every `every_steps` steps and at epoch ends.

    Keras' `BackupAndRestore` resumes at epoch boundaries only; a run that
    trains one long epoch (the paper samples 200k pairs) would lose all of
    it. This callback writes `step-<n>.npz` (the trainable weights, LoRA
    factors unmerged, the optimizer state, and the dropout randomness: seed
    generator states and torch's global generator), the early-stopping memory
    (best score, its epoch, the epochs waited, and `best-<epoch>.npz` with the
    best weights), then `state.json`
    naming those files with the position (`epoch`, `step` within the epoch,
    `global_step`); files are written
    under temporary names and renamed, and files no longer named are removed
    last. A kill at any moment leaves a `state.json` that names complete
    files at most `every_steps` steps old, and a run resumed from it computes
    what the uninterrupted run would have. Pair it with `PairBatches`, whose
    per-epoch order lets training continue at exactly that step.

    List the `EarlyStopping` callback before this one: its epoch-end update
    must be saved, and its start-of-training reset overwritten.

    Args:
        directory: where the checkpoint files live.
        every_steps: steps between saves.
        state: the position to continue from, as `restore` returns it
            (`None`: the start of training).
        early_stopping: the run's `keras.callbacks.EarlyStopping`, whose
            memory is saved and restored with the weights.

    Example:
    >>> state = StepCheckpoint.restore(model, "runs/demo/checkpoint")  # None on a fresh run
    >>> early = keras.callbacks.EarlyStopping("val_auc", mode="max", restore_best_weights=True)
    >>> checkpoint = StepCheckpoint("runs/demo/checkpoint", 100, state, early_stopping=early)
    >>> model.fit(PairBatches(x, y, 32, seed=0), callbacks=[early, checkpoint])
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every_steps: int,
        state: dict | None = None,
        early_stopping: keras.callbacks.EarlyStopping | None = None,
    ) -> None:
        super().__init__()
        if int(every_steps) < 1:
            raise ValueError(f"every_steps must be at least 1; got {every_steps}.")
        state = state or START
        self.directory = Path(directory)
        self.every_steps = int(every_steps)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self._step = int(state["step"])
        self.early_stopping = early_stopping
        self._early_memory = state.get("early_stopping")
        self._best_weights = state.get("best_weights")
        self._torch_rng_state = state.get("torch_rng_state")

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.early_stopping is not None and self._early_memory is not None:
            for name, value in self._early_memory.items():
                setattr(self.early_stopping, name, value)
            self.early_stopping.best_weights = self._best_weights

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # Set here, not at restore: starting `fit` draws from torch's
        # generator (data loader seeds), which the killed run had done earlier.
        if self._torch_rng_state is not None:
            torch.set_rng_state(self._torch_rng_state)
            self._torch_rng_state = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch != self.epoch:
            self.epoch, self._step = epoch, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._step += 1
        self.global_step += 1
        if self.global_step % self.every_steps == 0:
            self.save(self.epoch, self._step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.save(epoch + 1, 0)

    def save(self, epoch: int, step: int) -> None:
        """Writes weights and memory, then the state that names them, then drops stale files."""
        state = {
            "epoch": epoch,
            "step": step,
            "global_step": self.global_step,
            "weights": f"step-{self.global_step:09d}.npz",
        }
        variables = _training_variables(self.model)
        write_atomically(
            self.directory / state["weights"],
            lambda temporary: np.savez(
                temporary,
                names=np.array(list(variables)),
                # Unseeded dropout draws from torch's global generator.
                torch_rng_state=torch.get_rng_state().numpy(),
                **{
                    f"value_{index}": np.asarray(value)
                    for index, value in enumerate(variables.values())
                },
            ),
        )
        early = self.early_stopping
        if early is not None and early.best_weights is not None:
            self._early_memory = {
                "best": float(early.best),
                "best_epoch": int(early.best_epoch),
                "wait": int(early.wait),
            }
            # A later `fit` call of the same run (after a resumed epoch) starts
            # from this memory: its best weights must come with it.
            self._best_weights = early.best_weights
            state["early_stopping"] = self._early_memory
            state["best_weights"] = f"best-{early.best_epoch:05d}.npz"
            if not (self.directory / state["best_weights"]).is_file():
                write_atomically(
                    self.directory / state["best_weights"],
                    lambda temporary: np.savez(temporary, *early.best_weights),
                )
        write_json(self.directory / STATE_FILE, state)
        kept = {STATE_FILE, state["weights"], state.get("best_weights")}
        for path in self.directory.iterdir():
            if path.name not in kept and not path.name.startswith(".partial-"):
                path.unlink()

    @staticmethod
    def read_state(directory: str | os.PathLike) -> dict | None:
        """The saved state (position, file names, early-stopping memory), or `None`."""
        path = Path(directory) / STATE_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    @classmethod
    def restore(cls, model: keras.Model, directory: str | os.PathLike) -> dict | None:
        """Loads the latest checkpoint of `directory` into a compiled, built `model`.

        Returns:
            The saved state, with `best_weights` loaded as arrays, to pass to
            `StepCheckpoint(..., state=...)`; `None` when there is nothing to resume.

        Raises:
            ValueError: `state.json` names a missing file or another model's state.
        """
        state = cls.read_state(directory)
        if state is None:
            return None
        directory = Path(directory)
        for name in (state["weights"], state.get("best_weights")):
            if name and not (directory / name).is_file():
                raise ValueError(
                    f"Checkpoint '{directory / STATE_FILE}' names '{name}', which is missing; "
                    f"delete '{directory}' to train from the start."
                )
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = _training_variables(model)
        with np.load(directory / state["weights"]) as stored:
            names = stored["names"].tolist()
            values = {name: stored[f"value_{index}"] for index, name in enumerate(names)}
            torch_rng_state = torch.from_numpy(stored["torch_rng_state"])
        shapes = {name: tuple(variable.shape) for name, variable in variables.items()}
        if {name: value.shape for name, value in values.items()} != shapes:
            raise ValueError(
                f"Checkpoint '{directory / state['weights']}' holds {len(values)} variables, "
                f"this model trains {len(shapes)} of other shapes: "
                f"it belongs to another model; delete '{directory}'."
            )
        for name, value in values.items():
            variables[name].assign(value)
        state["torch_rng_state"] = torch_rng_state
        if state.get("best_weights"):
            with np.load(directory / state["best_weights"]) as stored:
                state["best_weights"] = [
                    stored[f"arr_{index}"] for index in range(len(stored.files))
                ]
        return state
