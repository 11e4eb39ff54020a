"""Per-image bounds on log p(x) of a variational model, by importance sampling in batches.

-log p(x) ~ -log (1/k) sum_i p(x, z_i) / q(z_i | x) (Burda et al.), and the negative ELBO, the
mean of -log p(x, z_i) / q(z_i | x), come from the same k log-weights. The k samples are drawn
`chunk` at a time and combined with a running log-sum-exp, so memory stays flat as k grows;
batches hold as many images as `DECODE_BUDGET` allows for the decoder (a conv decoder's take
fewer), so it stays flat for every architecture and data-set size too. Used by the test
metrics (`kerasae.assess.evaluate`), anomaly scores (`Autoencoder.score`) and validation batches.
"""

import math

import keras
import numpy as np
from keras import ops

from kerasae import backend

# Decoder outputs (float32 values) one batch of importance samples may hold, ~512 MB: the dense
# seed VAE decodes 487 images x 100 samples per call, a conv VAE (45k values per decode) 29 x 100.
DECODE_BUDGET = 2**27


class ImportanceLogWeights(keras.Model):
    """x -> log p(x, z_i) - log q(z_i | x) for `k` samples, shaped (batch, k).

    A model of its own so that `predict` compiles it on every backend.
    """

    def __init__(self, vae, k, **kwargs):
        super().__init__(**kwargs)
        self.vae = vae
        self.k = k
        # Nothing of its own to build: else `predict` first calls it op by op on a batch to build it
        # (on JAX each op of that pass compiled for the batch's shape).
        self.built = True

    def call(self, inputs):
        x, y = self.vae.split_inputs(inputs)
        y = None if y is None else ops.cast(y, "int32")
        return ops.transpose(self.vae.importance_log_weights(x, y, k=self.k)[0])


def decoded_values(model):
    """Values the decoder's layers output for one code: what one sample costs in memory."""
    return sum(math.prod(layer.output.shape[1:]) for layer in model.decoder.layers)


def images_per_batch(model, samples, most=500):
    """Images per batch when each is decoded `samples` times, within `DECODE_BUDGET`."""
    return max(1, min(most, DECODE_BUDGET // (decoded_values(model) * samples)))


def test_batch(model):
    """Images per call of a model's test step (a k-sample bound decodes each image k times), within
    `DECODE_BUDGET`: the entry's test loss and the ELBO's evaluation both use it, so that they share
    one compiled step (on JAX and XLA a new batch shape is a new program: ~1 s each for a small model
    on a CPU), and a test set of up to 500 images is one call, its mean that of its images."""
    return images_per_batch(model, model.k)


def bounds(model, inputs, n, k=1000, chunk=100, batch_size=None):
    """(ELBO, log p(x) estimate) per image, nats, float64, for `n` images fed as `inputs` (what
    the model's `model_inputs` gives), from the same k importance samples per image."""
    chunk = max(1, min(chunk, k, DECODE_BUDGET // decoded_values(model)))
    batch_size = batch_size or images_per_batch(model, chunk)
    inputs, _ = backend.pad_rows(inputs, batch_size)  # on JAX: a batch shape already compiled
    sampler = ImportanceLogWeights(model, chunk)
    total, mean = np.full(n, -np.inf), np.zeros(n)
    drawn = 0
    while drawn < k:
        if k - drawn < chunk:
            sampler = ImportanceLogWeights(model, k - drawn)
        log_w = sampler.predict(inputs, batch_size=batch_size, verbose=0)[:n].astype(np.float64)
        total = np.logaddexp(total, _logsumexp(log_w))
        mean += log_w.sum(axis=1) / k
        drawn += sampler.k
    return mean, total - math.log(k)


def _logsumexp(a):
    top = a.max(axis=1)
    return top + np.log(np.exp(a - top[:, None]).sum(axis=1))
