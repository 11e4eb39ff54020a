"""The importance-weighted autoencoder (Burda, Grosse and Salakhutdinov, 2016)."""

import math

import keras
from keras import ops

from kerasae import losses
from kerasae.models.vae import VAE


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

    def compute_losses(self, x, y=None, training=False):
        target, z_mean, z_log_var = self.posterior(x, y, training)
        log_w, log_px = self.log_weights(target, z_mean, z_log_var, y, training=training)
        bound = ops.logsumexp(log_w, axis=0) - math.log(self.k)
        return {
            "loss": -ops.mean(bound),
            "reconstruction_loss": -ops.mean(log_px),
            "kl_loss": ops.mean(losses.kl_standard_normal(z_mean, z_log_var)),
        }
