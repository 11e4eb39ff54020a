"""The β-TCVAE (Chen, Li, Grosse and Duvenaud, 2018): the KL term split in three, each weighted."""

import math

import keras
from keras import ops

from kerasae.models.vae import LOG_2PI, VAE


@keras.saving.register_keras_serializable(package="kerasae")
class BetaTCVAE(VAE):
    """A VAE whose KL term, averaged over the data, is split into the index-code mutual
    information I(x; z), the total correlation TC(z) = KL(q(z) || prod_j q(z_j)) and the
    dimension-wise KL sum_j KL(q(z_j) || p(z_j)), weighted by `mi_weight`, `tc_weight` and
    `dimension_kl_weight`. All three weights at 1 give the VAE's ELBO; a TC weight above 1
    favours codes whose units vary independently (disentangled).

    The aggregate posterior q(z) = E_x q(z | x), and each unit's marginal, are estimated from
    the batch by stratified sampling (`kl_decomposition`). The three terms are logged; `kl_loss`
    is their sum, the ELBO's KL term estimated from the same draw.

    Args:
        mi_weight: weight of the mutual information (the paper's alpha).
        tc_weight: weight of the total correlation (the paper's beta).
        dimension_kl_weight: weight of the dimension-wise KL (the paper's gamma).
        dataset_size: N, the number of training images (the estimator's weights).
        **kwargs: the `VAE` arguments (its `beta` does not apply).
    """

    loss_names = ("loss", "reconstruction_loss", "kl_loss", "mutual_information", "total_correlation", "dimension_kl")

    def __init__(self, mi_weight=1.0, tc_weight=6.0, dimension_kl_weight=1.0, dataset_size=60_000, **kwargs):
        super().__init__(**kwargs)
        self.mi_weight = mi_weight
        self.tc_weight = tc_weight
        self.dimension_kl_weight = dimension_kl_weight
        self.dataset_size = dataset_size

    def get_config(self):
        return {
            **super().get_config(),
            "mi_weight": self.mi_weight,
            "tc_weight": self.tc_weight,
            "dimension_kl_weight": self.dimension_kl_weight,
            "dataset_size": self.dataset_size,
        }

    def compute_losses(self, x, y=None, training=False):
        target, z_mean, z_log_var = self.posterior(x, y, training)
        z = self.sampling([z_mean, z_log_var])
        logits = self.decode_logits(self.decoder_inputs(z, y), training=training)
        reconstruction = ops.mean(self.reconstruction_loss(target, logits))
        mi, tc, dimension_kl = kl_decomposition(z, z_mean, z_log_var, self.dataset_size)
        # `kl_weight` (1 unless warmed up) scales the whole regularizer, as in the VAE.
        weighted = self.mi_weight * mi + self.tc_weight * tc + self.dimension_kl_weight * dimension_kl
        return {
            "loss": reconstruction + ops.cast(self.kl_weight, weighted.dtype) * weighted,
            "reconstruction_loss": reconstruction,
            "kl_loss": mi + tc + dimension_kl,
            "mutual_information": mi,
            "total_correlation": tc,
            "dimension_kl": dimension_kl,
        }


def kl_decomposition(z, z_mean, z_log_var, dataset_size):
    """(mutual information, total correlation, dimension-wise KL), batch means, from one draw
    z_i ~ q(z | x_i) per image of a batch of M out of N images.

    q(z_i) = (1/N) q(z_i | x_i) + (1/N) sum_{n != i} q(z_i | x_n): the first term is exact and
    the other M - 1 images of the batch, a uniform draw of the N - 1 others, estimate the sum
    without bias (weight (N - 1) / (N (M - 1)) each): the paper's minibatch stratified sampling
    in its simplest form. Each unit's q(z_ij) likewise."""
    z, z_mean, z_log_var = (ops.cast(t, "float32") for t in (z, z_mean, z_log_var))
    batch = ops.cast(ops.shape(z)[0], "float32")
    n = float(dataset_size)
    # log q(z_i,d | x_j, d) for every pair (i, j) and unit d: (batch, batch, units).
    diff = z[:, None, :] - z_mean[None, :, :]
    log_q_pairs = -0.5 * (ops.square(diff) * ops.exp(-z_log_var[None, :, :]) + z_log_var[None, :, :] + LOG_2PI)
    self_pair = ops.eye(ops.shape(z)[0], dtype="float32")
    other = ops.log(n - 1.0) - ops.log(ops.maximum(batch - 1.0, 1.0))  # (N - 1) / (M - 1), times 1/N below
    log_weights = (1.0 - self_pair) * other - math.log(n)
    log_qz = ops.logsumexp(ops.sum(log_q_pairs, axis=-1) + log_weights, axis=1)
    log_prod_qzd = ops.sum(ops.logsumexp(log_q_pairs + log_weights[:, :, None], axis=1), axis=-1)
    log_qz_given_x = ops.sum(-0.5 * (ops.square(z - z_mean) * ops.exp(-z_log_var) + z_log_var + LOG_2PI), axis=-1)
    log_pz = ops.sum(-0.5 * (ops.square(z) + LOG_2PI), axis=-1)
    return (
        ops.mean(log_qz_given_x - log_qz),
        ops.mean(log_qz - log_prod_qzd),
        ops.mean(log_prod_qzd - log_pz),
    )
