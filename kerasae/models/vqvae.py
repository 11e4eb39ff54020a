"""The vector-quantized VAE, VQ-VAE (van den Oord, Vinyals and Kavukcuoglu, 2017)."""

import keras
import numpy as np
from keras import ops

from kerasae import networks
from kerasae.layers import VectorQuantizer
from kerasae.models.autoencoder import PREDICT_BATCH, Autoencoder, _floats, run

CHUNK = 8192  # code vectors per distance computation in the numpy methods


@keras.saving.register_keras_serializable(package="kerasae")
class VQVAE(Autoencoder):
    """An autoencoder whose code is a grid of discrete symbols: each of the encoder's output
    vectors is replaced by the nearest of `codebook_size` learned vectors of size `latent_dim`.

    With conv layers the code has one vector per position of the encoder's last feature map
    (7 x 7 for two stride-2 layers on MNIST); with dense layers, `code_positions` vectors. The
    loss is the reconstruction, the codebook loss ||sg(z_e) - e||^2 (when the codebook learns by
    gradient) and `commitment_weight` times the commitment loss ||z_e - sg(e)||^2, summed per
    image; the quantizer passes gradients straight through (`kerasae.layers.VectorQuantizer`).
    `perplexity` is exp(entropy) of the batch's code use: the number of codes used evenly.

    Its prior over codes is fitted after training (`fit_prior`): the frequency of each code at
    each position in the training codes, a non-trainable weight saved with the model, so that a
    loaded model generates (`generate`) by drawing every position's code independently.

    Args:
        codebook_size: number of codebook vectors K.
        commitment_weight: weight of the commitment loss (the paper's beta).
        codebook_ema: learn the codebook by moving averages (else by its loss's gradient).
        dead_code_restarts: restart codes that fall out of use (the EMA codebook's; a codebook
            learned by gradient is not restarted).
        code_positions: vectors per code with dense layers (conv layers: the feature map's grid).
        **kwargs: the `Autoencoder` arguments; `latent_dim` is each code vector's size.
    """

    loss_names = ("loss", "reconstruction_loss", "codebook_loss", "commitment_loss", "perplexity")

    def __init__(
        self,
        codebook_size=512,
        commitment_weight=0.25,
        codebook_ema=True,
        dead_code_restarts=True,
        code_positions=16,
        **kwargs,
    ):
        self.codebook_size, self.commitment_weight = codebook_size, commitment_weight
        self.codebook_ema, self.dead_code_restarts = codebook_ema, dead_code_restarts
        self.code_positions = code_positions
        super().__init__(**kwargs)
        self.quantizer = VectorQuantizer(
            codebook_size,
            self.latent_dim,
            ema=codebook_ema,
            restart_share=0.03 if dead_code_restarts and codebook_ema else 0.0,
            name="quantizer",
        )
        self.code_log_prior = self.add_weight(
            shape=(self.positions, codebook_size), initializer="zeros", trainable=False, name="code_log_prior"
        )

    def get_config(self):
        return {
            **super().get_config(),
            "codebook_size": self.codebook_size,
            "commitment_weight": self.commitment_weight,
            "codebook_ema": self.codebook_ema,
            "dead_code_restarts": self.dead_code_restarts,
            "code_positions": self.code_positions,
        }

    @property
    def positions(self):
        """Code vectors per image."""
        if networks.is_conv(self.encoder_layers):
            h, w = networks.code_grid(self.image_shape, self.encoder_layers)
            return h * w
        return self.code_positions

    @property
    def code_size(self):
        return self.positions * self.latent_dim

    def build_networks(self):
        hidden = networks.mirror(self.encoder_layers) if self.decoder_layers is None else self.decoder_layers
        conv = networks.is_conv(self.encoder_layers)
        size = self.latent_dim if conv else self.code_size
        encoder = networks.build_encoder(
            self.image_shape,
            self.encoder_layers,
            self.activation,
            [("z", size, self.latent_activation)],
            grid_heads=True,
        )
        decoder = networks.build_decoder(
            self.code_size,
            hidden,
            self.activation,
            self.image_shape,
            self.output_activation,
            grid_code=self.latent_dim if conv else 0,
        )
        return encoder, decoder

    def encode_tensor(self, x, labels=None, training=False):
        """The quantized code of x, flattened."""
        z_e = ops.reshape(ops.cast(self.encoder(x, training=training), "float32"), (-1, self.latent_dim))
        _, quantized, _ = self.quantizer(z_e, training=False)
        return ops.reshape(quantized, (-1, self.code_size))

    def compute_losses(self, x, y=None, training=False):
        target, noisy = self.prepare_inputs(x, training)
        z_e = ops.reshape(ops.cast(self.encoder(noisy, training=training), "float32"), (-1, self.latent_dim))
        z_q, quantized, indices = self.quantizer(z_e, training=training)
        logits = self.decode_logits(ops.reshape(z_q, (-1, self.code_size)), training=training)
        reconstruction = ops.mean(self.reconstruction_loss(target, logits))
        images = ops.cast(ops.shape(target)[0], "float32")
        commitment = ops.sum(ops.square(z_e - ops.stop_gradient(quantized))) / images
        codebook = ops.sum(ops.square(ops.stop_gradient(z_e) - quantized)) / images
        loss = reconstruction + self.commitment_weight * commitment
        if not self.codebook_ema:
            loss = loss + codebook
        return {
            "loss": loss,
            "reconstruction_loss": reconstruction,
            "codebook_loss": codebook,
            "commitment_loss": commitment,
            "perplexity": perplexity(ops.sum(ops.one_hot(indices, self.codebook_size, dtype="float32"), axis=0)),
        }

    # -- numpy conveniences ------------------------------------------------

    def encode_indices(self, x, labels=None, batch_size=PREDICT_BATCH):
        """The code of images x as codebook indices, (n, positions) integers."""
        z_e = run(self.encoder, _floats(x), batch_size)
        return self.nearest_codes(z_e)

    def nearest_codes(self, z):
        """Indices of the codebook vectors nearest to flat codes z, (n, positions)."""
        vectors = _floats(z).reshape(-1, self.latent_dim)
        indices = [
            ops.convert_to_numpy(self.quantizer.nearest(vectors[i : i + CHUNK])[0])
            for i in range(0, len(vectors), CHUNK)
        ]
        return np.concatenate(indices or [np.zeros(0, "int64")]).reshape(len(z), self.positions)

    def codes_of(self, indices):
        """Flat codes (n, positions * latent_dim) of codebook indices (n, positions)."""
        codebook = ops.convert_to_numpy(self.quantizer.embeddings).astype("float32")
        return codebook[np.asarray(indices)].reshape(len(indices), self.code_size)

    def encode(self, x, labels=None, batch_size=PREDICT_BATCH):
        """Quantized codes of images x, flattened: (n, positions * latent_dim)."""
        return self.codes_of(self.encode_indices(x, labels, batch_size))

    def decode(self, z, labels=None, batch_size=PREDICT_BATCH):
        """Images for flat codes z, each vector first moved to its nearest codebook vector (codes
        from a density fitted to the codes, or on a line between two codes, are not in the codebook)."""
        return super().decode(self.codes_of(self.nearest_codes(z)), labels, batch_size)

    def fit_prior(self, x, labels=None):
        """Fits the prior over codes to images x: each position's code frequencies (smoothed)."""
        indices = self.encode_indices(x)
        counts = np.stack([np.bincount(column, minlength=self.codebook_size) for column in indices.T])
        frequencies = (counts + 0.01) / (len(indices) + 0.01 * self.codebook_size)
        self.code_log_prior.assign(np.log(frequencies).astype("float32"))

    def prior_sample(self, n, seed=None):
        """n flat codes whose symbols are drawn position by position from the fitted prior."""
        rng = np.random.default_rng(seed)
        probabilities = np.exp(ops.convert_to_numpy(self.code_log_prior).astype("float64"))
        cumulative = np.cumsum(probabilities / probabilities.sum(axis=1, keepdims=True), axis=1)
        draws = rng.random((n, self.positions, 1))
        indices = np.minimum((draws > cumulative[None]).sum(axis=-1), self.codebook_size - 1)
        return self.codes_of(indices)

    def code_metrics(self, x, labels=None):
        """Perplexity of the codes' use on images x and the share of the codebook they use."""
        counts = np.bincount(self.encode_indices(x, labels).ravel(), minlength=self.codebook_size)
        return {
            "perplexity": float(ops.convert_to_numpy(perplexity(counts.astype("float32")))),
            "codes_in_use": float(np.mean(counts > 0)),
        }


def perplexity(counts):
    """exp(entropy) of the distribution that code counts give: K when K codes are used evenly."""
    p = counts / ops.maximum(ops.sum(counts), 1.0)
    return ops.exp(-ops.sum(p * ops.log(ops.maximum(p, 1e-10))))
