"""The importance-weighted autoencoder (Burda, Grosse and Salakhutdinov, 2016)."""

import math

import keras
from keras import ops

from kerasae import losses
from kerasae.models.vae import VAE

LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="kerasae")
class IWAE(VAE):
    """A VAE trained on the k-sample importance-weighted bound.

    log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i | x)], z_i ~ q(z | x): tighter
    than the ELBO (k = 1) as k grows. `loss` is the negative bound per image;
    `reconstruction_loss` and `kl_loss` are the single-sample ELBO terms, reported
    for comparison with a VAE.

    Args:
        k: importance samples per image in the training objective.
        **kwargs: the `VAE` arguments (beta and KL warm-up do not apply).
    """

    def __init__(self, k=5, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def get_config(self):
        return {**super().get_config(), "k": self.k}

    def log_weights(self, target, z_mean, z_log_var, y=None, k=None, training=False):
        """log p(x, z_i) - log q(z_i | x) for k samples: shape (k, batch)."""
        k = k or self.k
        batch = ops.shape(z_mean)[0]
        mean_k = ops.concatenate([z_mean] * k, axis=0)
        log_var_k = ops.concatenate([z_log_var] * k, axis=0)
        z = self.sampling([mean_k, log_var_k])
        y_k = None if y is None else ops.concatenate([y] * k, axis=0)
        logits = self.decode_logits(self.decoder_inputs(z, y_k), training=training)
        log_px = -self.reconstruction_loss(ops.concatenate([target] * k, axis=0), logits)
        log_pz = -0.5 * ops.sum(ops.square(z) + LOG_2PI, axis=-1)
        log_qz = -0.5 * ops.sum(ops.square(z - mean_k) * ops.exp(-log_var_k) + log_var_k + LOG_2PI, axis=-1)
        return ops.reshape(log_px + log_pz - log_qz, (k, batch)), log_px

    def compute_losses(self, x, y=None, training=False):
        target, z_mean, z_log_var = self.posterior(x, y, training)
        log_w, log_px = self.log_weights(target, z_mean, z_log_var, y, training=training)
        bound = ops.logsumexp(log_w, axis=0) - math.log(self.k)
        return {
            "loss": -ops.mean(bound),
            "reconstruction_loss": -ops.mean(log_px),
            "kl_loss": ops.mean(losses.kl_standard_normal(z_mean, z_log_var)),
        }
