"""Autoencoders constrained through their hidden units: sparse and contractive.

The seed: "to prevent the model from learning the identity mapping, some
constraints are applied to the hidden units." These add a penalty on the code
to the reconstruction loss, through `Autoencoder.penalties`.
"""

import keras
from keras import ops

from kerasae.layers import Corruption
from kerasae.models.autoencoder import Autoencoder

# The derivative of an activation, written with its output h.
_DERIVATIVES = {
    "sigmoid": lambda h: h * (1.0 - h),
    "tanh": lambda h: 1.0 - ops.square(h),
    "linear": lambda h: ops.ones_like(h),
    "relu": lambda h: ops.cast(h > 0, h.dtype),
}


@keras.saving.register_keras_serializable(package="kerasae")
class SparseAutoencoder(Autoencoder):
    """An autoencoder whose code units are pushed to be mostly inactive.

    Args:
        sparsity_penalty: "kl" (Ng's sparse AE: sum_j KL(target || mean activation
            of unit j over the batch); needs a sigmoid code) or "l1" (sum of
            |h_j| per image).
        sparsity_weight: weight of the penalty in the loss.
        sparsity_target: the mean activation the "kl" penalty aims for.
        weight_penalty: Ng's weight decay lambda: the loss adds lambda / 2 times the sum of the
            squared kernel weights, encoder and decoder (biases free). It fixes the scale a sparse
            code could otherwise trade with the decoder's weights (tiny codes, huge weights).
        **kwargs: the `Autoencoder` arguments.
    """

    loss_names = ("loss", "reconstruction_loss", "sparsity_loss", "weight_loss")

    def __init__(self, sparsity_penalty="kl", sparsity_weight=0.1, sparsity_target=0.05, weight_penalty=0.0, **kwargs):
        super().__init__(**kwargs)
        if sparsity_penalty not in ("kl", "l1"):
            raise ValueError(f"`sparsity_penalty` must be 'kl' or 'l1'. Received: sparsity_penalty={sparsity_penalty}")
        if sparsity_penalty == "kl" and self.latent_activation != "sigmoid":
            raise ValueError(
                "The 'kl' sparsity penalty needs activations in (0, 1): latent_activation='sigmoid'. "
                f"Received: latent_activation={self.latent_activation}"
            )
        self.sparsity_penalty = sparsity_penalty
        self.sparsity_weight = sparsity_weight
        self.sparsity_target = sparsity_target
        self.weight_penalty = weight_penalty

    def get_config(self):
        return {
            **super().get_config(),
            "sparsity_penalty": self.sparsity_penalty,
            "sparsity_weight": self.sparsity_weight,
            "sparsity_target": self.sparsity_target,
            "weight_penalty": self.weight_penalty,
        }

    def sparsity(self, code):
        """The sparsity penalty of a batch of codes."""
        if self.sparsity_penalty == "l1":
            return ops.mean(ops.sum(ops.abs(code), axis=-1))
        rho = self.sparsity_target
        rho_hat = ops.clip(ops.mean(code, axis=0), 1e-6, 1.0 - 1e-6)
        return ops.sum(rho * ops.log(rho / rho_hat) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - rho_hat)))

    def penalties(self, x, code):
        kernels = [w for w in self.trainable_weights if w.path.endswith("kernel")]
        squares = ops.sum(ops.stack([ops.sum(ops.square(w)) for w in kernels]))
        return {
            "sparsity_loss": (self.sparsity_weight, self.sparsity(code)),
            "weight_loss": (self.weight_penalty, 0.5 * squares),
        }


@keras.saving.register_keras_serializable(package="kerasae")
class ContractiveAutoencoder(Autoencoder):
    """An autoencoder penalised by the Frobenius norm of its encoder's Jacobian.

    Rifai et al. (2011): the code should change little when the input moves off
    the data, so the loss adds `contractive_weight * ||d h / d x||_F^2` per
    image. For the seed's one-layer encoder the norm is exact,
    sum_j f'(a_j)^2 sum_i W_ij^2; for deeper encoders it is estimated by finite
    differences along random directions, (1 / s^2) E ||h(x + s e) - h(x)||^2 with
    e ~ N(0, I) and a small s, which needs no backend-specific autodiff.

    Args:
        contractive_weight: weight of the penalty in the loss.
        **kwargs: the `Autoencoder` arguments.
    """

    loss_names = ("loss", "reconstruction_loss", "contractive_loss")
    probe_scale = 1e-2

    def __init__(self, contractive_weight=0.1, **kwargs):
        super().__init__(**kwargs)
        self.contractive_weight = contractive_weight
        # A layer owns the probe's SeedGenerator so that its state is saved with the model.
        self.probe = Corruption("gaussian", sigma=self.probe_scale, seed=None if self.seed is None else self.seed + 4)

    def get_config(self):
        return {**super().get_config(), "contractive_weight": self.contractive_weight}

    def jacobian_norm(self, x, code):
        """||d code / d x||_F^2 per image."""
        dense_layers = [layer for layer in self.encoder.layers if isinstance(layer, keras.layers.Dense)]
        if len(dense_layers) == 1 and not self.encoder_layers and self.latent_activation in _DERIVATIVES:
            slope = _DERIVATIVES[self.latent_activation](code)  # (batch, units)
            column_norms = ops.sum(ops.square(dense_layers[0].kernel), axis=0)  # (units,)
            return ops.sum(ops.square(slope) * column_norms, axis=-1)
        moved = self.encoder(self.probe.corrupt(x), training=True)
        return ops.sum(ops.square(moved - code), axis=-1) / (self.probe_scale**2)

    def penalties(self, x, code):
        return {"contractive_loss": (self.contractive_weight, ops.mean(self.jacobian_norm(x, code)))}
