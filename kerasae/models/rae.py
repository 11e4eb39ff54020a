"""The regularized autoencoder, RAE-L2 (Ghosh, Sajjadi, Vergari, Black and Schölkopf, 2020)."""

import keras
from keras import ops

from kerasae.models.autoencoder import Autoencoder


@keras.saving.register_keras_serializable(package="kerasae")
class RAE(Autoencoder):
    """A deterministic autoencoder with L2 penalties in place of the VAE's noise and KL term.

    The loss adds `code_weight * ||z||^2 / 2` per image (it keeps the code space small and
    smooth) and `decoder_weight * ||theta_dec||^2`, the squared norm of the decoder's kernels (it
    keeps the decoder smooth). It has no prior: it generates by decoding codes drawn from a
    density fitted to its training codes after training (`kerasae.assess.samplers`, a Gaussian mixture).

    Args:
        code_weight: weight of the codes' squared norm.
        decoder_weight: weight of the decoder kernels' squared norm.
        **kwargs: the `Autoencoder` arguments.
    """

    loss_names = ("loss", "reconstruction_loss", "code_penalty", "decoder_penalty")

    def __init__(self, code_weight=0.1, decoder_weight=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.code_weight = code_weight
        self.decoder_weight = decoder_weight

    def get_config(self):
        return {**super().get_config(), "code_weight": self.code_weight, "decoder_weight": self.decoder_weight}

    def penalties(self, x, code):
        code = ops.cast(code, "float32")
        kernels = [w for w in self.decoder.trainable_weights if len(w.shape) > 1]
        decoder = sum(ops.sum(ops.square(ops.cast(w, "float32"))) for w in kernels)
        return {
            "code_penalty": (self.code_weight, ops.mean(0.5 * ops.sum(ops.square(code), axis=-1))),
            "decoder_penalty": (self.decoder_weight, decoder),
        }
