"""An MLP autoencoder to k dimensions: a training-free compression baseline (MARC, Sec. 4.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from marc_keras.utils.backend_guard import set_random_seed

# Columns whose training spread is below this are constant: they are centred
# but not scaled, so that float noise is not blown up into a feature.
MIN_STD = 1e-6


def dense_stack(
    units: Iterable[int], activation: str | Callable | None, name: str
) -> list[keras.layers.Dense]:
    """Dense layers of the given widths, all with `activation`."""
    return [
        keras.layers.Dense(width, activation=activation, name=f"{name}_{index}")
        for index, width in enumerate(units)
    ]


@keras.saving.register_keras_serializable(package="marc_keras")
class MLPAutoencoder(keras.Model):
    """Encoder MLP -> linear k-d code -> decoder MLP -> d, trained on MSE.

    Args:
        dim: d, the input and reconstruction width.
        components: k, the width of the linear bottleneck.
        hidden_units: encoder hidden widths; the decoder mirrors them.
        activation: activation of the hidden layers.
        **kwargs: base model arguments.

    Returns:
        Called on (B, d) inputs, a dict `code` (B, k) and `reconstruction` (B, d).
    """

    def __init__(
        self,
        dim: int,
        components: int,
        hidden_units: Sequence[int] = (256,),
        activation: str | Callable | None = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.components = int(components)
        self.hidden_units = tuple(int(width) for width in hidden_units)
        self.activation = activation
        self.encoder_layers = dense_stack(self.hidden_units, activation, "encoder")
        self.code_layer = keras.layers.Dense(self.components, name="code")
        self.decoder_layers = dense_stack(self.hidden_units[::-1], activation, "decoder")
        self.reconstruction_layer = keras.layers.Dense(self.dim, name="reconstruction")

    def hidden(self, inputs):
        for layer in self.encoder_layers:
            inputs = layer(inputs)
        return inputs

    def decode(self, code):
        for layer in self.decoder_layers:
            code = layer(code)
        return self.reconstruction_layer(code)

    def call(self, inputs, training=None):
        code = self.code_layer(self.hidden(inputs))
        return {"code": code, "reconstruction": self.decode(code)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        error = ops.cast(y_pred["reconstruction"], "float32") - ops.cast(y, "float32")
        return ops.mean(ops.square(error))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "dim": self.dim,
            "components": self.components,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
        }


class AutoencoderProjection:
    """Compresses vectors to k dims with a small MLP autoencoder trained on them.

    One of MARC's training-free baselines (Sec. 4.1): like `PCAProjection`
    it sees only the frozen backbone's vectors, never a click label, but
    its encoder is non-linear. Inputs are standardised with the training
    mean and standard deviation; the encoder MLP ends in a linear k-d
    bottleneck, the decoder MLP maps it back to d, and the pair trains on
    the mean squared reconstruction error with Adam. `transform` returns the
    bottleneck. Fit it on training data only (training users and the item
    catalogue), then apply it everywhere.

    `fit` calls `set_random_seed(seed)` (initialisation and
    shuffling), so the same data and seed give the same projection on the
    same machine and thread count; it also reseeds Python, numpy and torch.

    Args:
        components: k, the output width.
        hidden_units: hidden widths of the encoder; the decoder mirrors them.
        epochs: passes over the training vectors.
        batch_size: vectors per step.
        learning_rate: Adam learning rate.
        activation: activation of the hidden layers.
        seed: seed of initialisation and shuffling.

    Example:
    >>> autoencoder = AutoencoderProjection(128).fit(train_vectors)
    >>> autoencoder.transform(test_vectors).shape
    (N, 128)
    """

    name = "autoencoder"

    def __init__(
        self,
        components: int = 128,
        hidden_units: Sequence[int] = (256,),
        epochs: int = 50,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        activation: str | Callable | None = "relu",
        seed: int = 0,
    ) -> None:
        for option, value in (
            ("components", components),
            ("epochs", epochs),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or int(value) != value or value <= 0:
                raise ValueError(
                    f"{type(self).__name__} {option} must be a positive whole number; "
                    f"got {value!r}."
                )
        hidden_units = tuple(hidden_units)
        if any(
            isinstance(width, bool) or int(width) != width or width <= 0 for width in hidden_units
        ):
            raise ValueError(
                f"{type(self).__name__} hidden_units must be positive widths like (256,); "
                f"got {hidden_units!r}."
            )
        if not float(learning_rate) > 0:
            raise ValueError(
                f"{type(self).__name__} learning_rate must be positive; got {learning_rate!r}."
            )
        self.components = int(components)
        self.hidden_units = tuple(int(width) for width in hidden_units)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.activation = activation
        self.seed = int(seed)
        self.mean = None
        self.scale = None
        self.model = None
        self.loss_history = []

    def _build_model(self, dim):
        return MLPAutoencoder(
            dim, self.components, self.hidden_units, self.activation, name=self.name
        )

    def _check(self, vectors, step):
        vectors = np.asarray(vectors, dtype="float64")
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(
                f"{type(self).__name__}.{step} takes a 2-D (N, d) array of vectors; "
                f"got shape {vectors.shape}."
            )
        if not np.isfinite(vectors).all():
            rows = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
            raise ValueError(
                f"{type(self).__name__}.{step}: {len(rows)} rows hold NaN or infinity "
                f"(first row {rows[0]}); drop or repair them first."
            )
        if self.mean is not None and vectors.shape[1] != len(self.mean):
            raise ValueError(
                f"{type(self).__name__} was fitted on {len(self.mean)}-d vectors; "
                f"got {vectors.shape[1]}-d."
            )
        return vectors

    def _standardise(self, vectors):
        return ((vectors - self.mean) / self.scale).astype("float32")

    def fit(self, vectors: np.ndarray) -> AutoencoderProjection:
        """Standardises `vectors` (N, d) and trains the autoencoder on them.

        Returns:
            `self`; `loss_history` holds the training loss of every epoch.

        Raises:
            ValueError: not a 2-D finite array, fewer than 2 rows, or
                `components` wider than d.
        """
        self.mean = None
        vectors = self._check(vectors, "fit")
        rows, dim = vectors.shape
        if rows < 2 or self.components > dim:
            raise ValueError(
                f"{type(self).__name__} to {self.components} dims needs at least 2 rows and "
                f"{self.components} columns; got shape {vectors.shape}. Lower components."
            )
        self.mean = vectors.mean(axis=0)
        spread = vectors.std(axis=0)
        self.scale = np.where(spread > MIN_STD, spread, 1.0)
        standardised = self._standardise(vectors)
        set_random_seed(self.seed)
        self.model = self._build_model(dim)
        self.model.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
        history = self.model.fit(
            standardised,
            standardised,
            batch_size=min(self.batch_size, rows),
            epochs=self.epochs,
            shuffle=True,
            verbose=0,
        )
        self.loss_history = [float(loss) for loss in history.history["loss"]]
        return self

    def _predict(self, vectors, step):
        if self.model is None:
            raise ValueError(f"Call {type(self).__name__}.fit before {step}.")
        standardised = self._standardise(self._check(vectors, step))
        return self.model.predict(standardised, batch_size=4 * self.batch_size, verbose=0)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, d) -> (N, k) float32: the bottleneck code of each vector."""
        return np.asarray(self._predict(vectors, "transform")["code"], dtype="float32")

    def reconstruct(self, vectors: np.ndarray) -> np.ndarray:
        """(N, d) -> (N, d) float32: each vector decoded from its code, in input units."""
        standardised = self._predict(vectors, "reconstruct")["reconstruction"]
        return (np.asarray(standardised, "float64") * self.scale + self.mean).astype("float32")
