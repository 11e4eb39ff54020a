"""The variational autoencoder (Kingma and Welling, 2014), as in the seed."""

import math

import keras
from keras import ops

from kerasae import losses
from kerasae.layers import Sampling
from kerasae.models.autoencoder import PREDICT_BATCH, Autoencoder, _floats, _offset, run

LOG_2PI = math.log(2.0 * math.pi)
LIKELIHOODS = ("bernoulli", "gaussian", "logistic")
SCALES = ("unit", "per_channel", "per_pixel")


@keras.saving.register_keras_serializable(package="kerasae")
class VAE(Autoencoder):
    """q(z|x) = N(z_mean(x), exp(z_log_var(x))), p(z) = N(0, I), p(x|z) from the decoder.

    Minimises the negative ELBO per image, `reconstruction_loss + kl_weight * kl_loss`,
    with the reconstruction term estimated from one reparametrized sample and
    the KL term in closed form. `kl_weight` is a non-trainable variable holding
    `beta`, which a `KLWarmup` callback ramps up from 0 when warm-up is asked for.

    Args:
        likelihood: "bernoulli" (binary pixels), "gaussian", or "logistic" (8-bit pixels k / 255:
            the discretized logistic, exact probabilities).
        scale: the gaussian's sigma or the logistic's scale: "unit" (sigma 1, gaussian only), or
            learned, shared by all images, "per_channel" or "per_pixel".
        beta: weight of the KL term (beta-VAE; 1 gives the ELBO).
        kl_warmup_epochs: epochs over which the KL weight rises linearly to beta.
        **kwargs: the `Autoencoder` arguments (latent_activation is unused).
    """

    loss_names = ("loss", "reconstruction_loss", "kl_loss")
    scores = ("reconstruction", "elbo", "nll")
    default_score = "elbo"

    def __init__(self, likelihood="bernoulli", beta=1.0, kl_warmup_epochs=0, scale="unit", **kwargs):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}. Received: likelihood={likelihood}")
        fits = {"bernoulli": scale == "unit", "gaussian": True, "logistic": scale != "unit"}[likelihood]
        if scale not in SCALES or not fits:
            raise ValueError(
                "`scale` is 'unit' for the bernoulli likelihood, 'per_channel' or 'per_pixel' for the logistic, "
                f"any of {SCALES} for the gaussian. Received: likelihood={likelihood}, scale={scale}"
            )
        kwargs["reconstruction"] = "bce" if likelihood == "bernoulli" else "mse"
        super().__init__(**kwargs)
        self.likelihood = likelihood
        self.scale = scale
        # The learned log sigma (gaussian) or log scale (logistic), one per channel or per pixel,
        # starting at log 0.1 for images in [0, 1].
        shape = {"per_channel": self.image_shape[-1:], "per_pixel": self.image_shape}.get(scale)
        self.log_scale = None
        if shape is not None:
            self.log_scale = self.add_weight(
                shape=shape, initializer=keras.initializers.Constant(math.log(0.1)), name="log_scale"
            )
        self.beta = beta
        self.kl_warmup_epochs = kl_warmup_epochs
        self.sampling = Sampling(seed=_offset(self.seed, 3), dtype="float32", name="sampling")
        self.kl_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(0.0 if kl_warmup_epochs else beta),
            trainable=False,
            name="kl_weight",
        )

    def latent_heads(self):
        return [("z_mean", self.latent_dim, None), ("z_log_var", self.latent_dim, None)]

    def get_config(self):
        config = super().get_config()
        config.pop("reconstruction")
        config.pop("latent_activation")
        return {
            **config,
            "likelihood": self.likelihood,
            "scale": self.scale,
            "beta": self.beta,
            "kl_warmup_epochs": self.kl_warmup_epochs,
        }

    def encode_tensor(self, x, labels=None, training=False):
        z_mean, _ = self.encoder(self.encoder_inputs(x, labels), training=training)
        return z_mean

    def reconstruction_loss(self, target, logits, batch_dims=1):
        """-log p(x | z) per image, from the decoder's last pre-activation output."""
        if self.likelihood == "bernoulli":
            return super().reconstruction_loss(target, logits, batch_dims)
        mean = self.decoder.layers[-1](logits)
        if self.log_scale is None:
            return losses.gaussian_nll(target, mean, batch_dims)
        # One value per flat pixel: (H, W, C) flattens channel-fastest, so a channel's repeats H * W times.
        pixels = math.prod(self.image_shape)
        log_scale = ops.reshape(ops.cast(self.log_scale, "float32"), (-1,))
        log_scale = ops.tile(log_scale, (pixels // ops.shape(log_scale)[0],))
        if self.likelihood == "gaussian":
            return losses.gaussian_nll_scaled(target, mean, log_scale, batch_dims)
        return losses.discretized_logistic_nll(target, mean, log_scale, batch_dims)

    def posterior(self, x, y=None, training=False):
        """Targets and q(z|x): (target, z_mean, z_log_var) for one batch."""
        target, noisy = self.prepare_inputs(x, training)
        z_mean, z_log_var = self.encoder(self.encoder_inputs(noisy, y), training=training)
        return target, z_mean, z_log_var

    def log_weights(self, target, z_mean, z_log_var, y=None, k=None, training=False):
        """Importance log-weights log p(x, z_i) - log q(z_i | x) of k samples z_i ~ q(z | x).

        Returns:
            (log_w of shape (k, batch), log p(x | z_i) flattened to (k * batch,)).
        """
        k = k or self.k
        batch = ops.shape(z_mean)[0]
        mean_k = ops.concatenate([z_mean] * k, axis=0)
        log_var_k = ops.concatenate([z_log_var] * k, axis=0)
        z = self.sampling([mean_k, log_var_k])
        y_k = None if y is None else ops.concatenate([y] * k, axis=0)
        logits = self.decode_logits(self.decoder_inputs(z, y_k), training=training)
        # Flat (k, batch, pixels) logits against the targets broadcast over the samples: copying the
        # targets k times, or reducing over (H, W, C), runs several times slower under XLA on CPU.
        pixels = math.prod(self.image_shape)
        logits = ops.reshape(logits, (k, -1, pixels))
        target = ops.reshape(target, (1, -1, pixels))
        log_px = ops.reshape(-self.reconstruction_loss(target, logits, batch_dims=2), (-1,))
        log_pz = -0.5 * ops.sum(ops.square(z) + LOG_2PI, axis=-1)
        log_qz = -0.5 * ops.sum(ops.square(z - mean_k) * ops.exp(-log_var_k) + log_var_k + LOG_2PI, axis=-1)
        return ops.reshape(log_px + log_pz - log_qz, (k, batch)), log_px

    def importance_log_weights(self, x, y=None, k=None, training=False):
        """`log_weights` of k posterior draws for images x: (log_w (k, batch), log p(x | z_i) (k * batch,))."""
        target, z_mean, z_log_var = self.posterior(x, y, training)
        return self.log_weights(target, z_mean, z_log_var, y, k, training)

    def compute_losses(self, x, y=None, training=False):
        target, z_mean, z_log_var = self.posterior(x, y, training)
        z = self.sampling([z_mean, z_log_var])
        logits = self.decode_logits(self.decoder_inputs(z, y), training=training)
        reconstruction = ops.mean(self.reconstruction_loss(target, logits))
        kl = ops.mean(losses.kl_standard_normal(z_mean, z_log_var))
        return {
            "loss": reconstruction + ops.cast(self.kl_weight, kl.dtype) * kl,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl,
        }

    # -- numpy conveniences ------------------------------------------------

    def encode(self, x, labels=None, batch_size=PREDICT_BATCH):
        """Posterior means z_mean(x) (numpy in, numpy out)."""
        return self.encode_distribution(x, labels, batch_size)[0]

    def encode_distribution(self, x, labels=None, batch_size=PREDICT_BATCH):
        """(z_mean, z_log_var) of q(z|x) (numpy in, numpy out)."""
        z_mean, z_log_var = run(self.encoder, self.encoder_feed(x, labels), batch_size)
        return z_mean, z_log_var

    def encoder_feed(self, x, labels=None):
        """The encoder's numpy inputs."""
        return _floats(x)
