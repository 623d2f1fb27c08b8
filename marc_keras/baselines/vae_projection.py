"""A variational autoencoder to k dimensions: a training-free compression baseline
(MARC, Sec. 4.1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from marc_keras.baselines.autoencoder_projection import AutoencoderProjection, MLPAutoencoder


@keras.saving.register_keras_serializable(package="marc_keras")
class VariationalAutoencoder(MLPAutoencoder):
    """Encoder MLP -> Gaussian posterior N(mean, exp(log_var)) over k dims -> decoder MLP.

    Training decodes a sample `mean + exp(log_var / 2) * eps`
    (reparameterisation); inference decodes the mean. The loss per vector
    is the squared reconstruction error summed over the d features plus
    `beta` times KL(posterior || N(0, I)) summed over the k dims, averaged
    over the batch.

    Args:
        dim: d, the input and reconstruction width.
        components: k, the latent width.
        hidden_units: encoder hidden widths; the decoder mirrors them.
        activation: activation of the hidden layers.
        beta: weight of the KL term.
        seed: seed of the reparameterisation noise.
        **kwargs: base model arguments.

    Returns:
        Called on (B, d) inputs, a dict `code` (the posterior mean, B x k),
        `log_var` (B, k) and `reconstruction` (B, d).
    """

    def __init__(
        self,
        dim: int,
        components: int,
        hidden_units: Sequence[int] = (256,),
        activation: str | Callable | None = "relu",
        beta: float = 1.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(dim, components, hidden_units, activation, **kwargs)
        self.beta = float(beta)
        self.seed = int(seed)
        self.log_var_layer = keras.layers.Dense(self.components, name="log_var")
        self.noise = keras.random.SeedGenerator(self.seed)

    def call(self, inputs, training=None):
        hidden = self.hidden(inputs)
        mean, log_var = self.code_layer(hidden), self.log_var_layer(hidden)
        latent = mean
        if training:
            noise = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.noise)
            latent = mean + ops.exp(0.5 * log_var) * noise
        return {"code": mean, "log_var": log_var, "reconstruction": self.decode(latent)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Both terms are sums per vector: with a per-feature mean for the
        # reconstruction, the KL over k dims would outweigh it and pull every
        # latent dim onto the prior (posterior collapse).
        error = ops.cast(y_pred["reconstruction"], "float32") - ops.cast(y, "float32")
        reconstruction = ops.sum(ops.square(error), axis=-1)
        mean = ops.cast(y_pred["code"], "float32")
        log_var = ops.cast(y_pred["log_var"], "float32")
        divergence = 0.5 * ops.sum(ops.exp(log_var) + ops.square(mean) - 1.0 - log_var, axis=-1)
        return ops.mean(reconstruction + self.beta * divergence)

    def get_config(self) -> dict:
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}


class VAEProjection(AutoencoderProjection):
    """Compresses vectors to k dims with a variational autoencoder trained on them.

    One of MARC's training-free baselines (Sec. 4.1): it sees only the frozen
    backbone's vectors, never a click label. Inputs are standardised with
    the training mean and standard deviation; the encoder MLP gives the mean
    and log-variance of a k-d Gaussian, a reparameterised sample is decoded
    back to d, and the loss is the squared reconstruction error plus `beta`
    times the KL divergence to N(0, I) (both summed per vector, so `beta=1`
    is the usual evidence lower bound up to the decoder's noise scale).
    `transform` returns the posterior mean, a deterministic code. Fit it on
    training data only (training users and the item catalogue).

    `fit` calls `set_random_seed(seed)` (`AutoencoderProjection.fit`) and seeds the sampling
    noise, so the same data and seed give the same projection on the same
    machine and thread count; it also reseeds Python, numpy and torch.

    Args:
        components: k, the output width.
        hidden_units: hidden widths of the encoder; the decoder mirrors them.
        epochs: passes over the training vectors.
        batch_size: vectors per step.
        learning_rate: Adam learning rate.
        activation: activation of the hidden layers.
        beta: weight of the KL term; smaller keeps more detail, larger a
            smoother, more prior-like code.
        seed: seed of initialisation, shuffling and sampling.

    Example:
    >>> vae = VAEProjection(128, beta=1.0).fit(train_vectors)
    >>> vae.transform(test_vectors).shape
    (N, 128)
    """

    name = "vae"

    def __init__(
        self,
        components: int = 128,
        hidden_units: Sequence[int] = (256,),
        epochs: int = 50,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        activation: str | Callable | None = "relu",
        beta: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            components, hidden_units, epochs, batch_size, learning_rate, activation, seed
        )
        if not float(beta) >= 0:
            raise ValueError(f"VAEProjection beta must be >= 0; got {beta!r}.")
        self.beta = float(beta)

    def _build_model(self, dim):
        return VariationalAutoencoder(
            dim,
            self.components,
            self.hidden_units,
            self.activation,
            self.beta,
            self.seed,
            name=self.name,
        )
