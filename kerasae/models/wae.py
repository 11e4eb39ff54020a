"""The Wasserstein autoencoder with an MMD penalty (Tolstikhin, Bousquet, Gelly and Schölkopf, 2018)."""

import keras
from keras import ops

from kerasae import losses
from kerasae.layers import Sampling
from kerasae.models.autoencoder import Autoencoder, _offset


@keras.saving.register_keras_serializable(package="kerasae")
class WAE(Autoencoder):
    """A deterministic autoencoder whose codes are pulled, as a whole, towards the prior N(0, I).

    The loss is the reconstruction plus `mmd_weight` times the maximum mean discrepancy between
    the batch's codes and as many draws from the prior (inverse multiquadratic kernel). Unlike
    the VAE's KL term, which pulls each image's posterior to the prior, the MMD matches the
    aggregate of the codes to it, so codes stay sharp and the prior still decodes to images.

    Args:
        mmd_weight: weight of the MMD term (the paper's lambda, 10 for MNIST).
        **kwargs: the `Autoencoder` arguments.
    """

    loss_names = ("loss", "reconstruction_loss", "mmd_loss")

    def __init__(self, mmd_weight=10.0, **kwargs):
        super().__init__(**kwargs)
        self.mmd_weight = mmd_weight
        # A layer owns the prior's SeedGenerator so that its state is saved with the model.
        self.prior_draws = Sampling(seed=_offset(self.seed, 5), dtype="float32", name="prior_draws")

    def get_config(self):
        return {**super().get_config(), "mmd_weight": self.mmd_weight}

    def penalties(self, x, code):
        zeros = ops.zeros_like(ops.cast(code, "float32"))
        prior = self.prior_draws([zeros, zeros])  # N(0, I), as many draws as codes
        return {"mmd_loss": (self.mmd_weight, losses.mmd_imq(code, prior))}
