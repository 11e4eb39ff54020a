"""Hierarchical VAEs: several stochastic layers (Burda, Grosse and Salakhutdinov 2016), top-down
inference as in the Ladder VAE (Sønderby et al. 2016), the VampPrior (Tomczak and Welling 2018)
and inverse autoregressive flows on the posterior (Kingma et al. 2016)."""

import math

import keras
import numpy as np
from keras import ops

from kerasae import networks
from kerasae.layers import AutoregressiveFlowStep, Sampling
from kerasae.models.autoencoder import PREDICT_BATCH, _dtype_policy, _floats, _offset
from kerasae.models.vae import LOG_2PI, VAE

INFERENCE = ("bottom_up", "ladder")
# Every Gaussian's log-variance lies here: standard deviations from 0.018 to 7.4.
LOG_VAR_RANGE = (-8.0, 4.0)
PRIORS = ("standard", "vamp")
# Burda et al.'s two-stochastic-layer architecture: 784-[200-200]-100-[100-100]-50.
BURDA_LAYERS = ({"hidden": [200, 200], "latent_dim": 100}, {"hidden": [100, 100], "latent_dim": 50})


def log_normal(z, mean, log_var):
    """log N(z; mean, exp(log_var)) summed over the last axis."""
    return -0.5 * ops.sum(ops.square(z - mean) * ops.exp(-log_var) + log_var + LOG_2PI, axis=-1)


def log_standard_normal(z):
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * ops.sum(ops.square(z) + LOG_2PI, axis=-1)


def log_mixture(z, means, log_vars):
    """log (1/K) sum_k N(z; means_k, exp(log_vars_k)) of z (n, d) under K diagonal Gaussians (K, d).

    The squared distances come from matrix products, never an (n, K, d) tensor: the NLL estimate
    evaluates 50,000 samples a call against 500 components."""
    precision = ops.exp(-log_vars)
    squared = (
        ops.matmul(ops.square(z), ops.transpose(precision))
        - 2.0 * ops.matmul(z, ops.transpose(means * precision))
        + ops.sum(ops.square(means) * precision, axis=-1)[None, :]
    )
    log_components = -0.5 * (squared + ops.sum(log_vars + LOG_2PI, axis=-1)[None, :])
    return ops.logsumexp(log_components, axis=-1) - math.log(ops.shape(means)[0])


def precision_weighted(mean_a, log_var_a, mean_b, log_var_b):
    """The Ladder VAE's combination of two Gaussians' means and log-variances by their precisions."""
    precision_a, precision_b = ops.exp(-log_var_a), ops.exp(-log_var_b)
    variance = 1.0 / (precision_a + precision_b)
    return (mean_a * precision_a + mean_b * precision_b) * variance, ops.log(variance)


@keras.saving.register_keras_serializable(package="kerasae")
class HVAE(VAE):
    """A VAE with a hierarchy of stochastic layers z_1 (next to the image) ... z_L (the top).

    Generative model: p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1), each conditional a
    diagonal Gaussian (or the decoder's likelihood) computed by a dense network that mirrors the
    layer's inference network. Inference (`inference`):

    - "bottom_up" (Burda et al.): q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}).
    - "ladder" (Sønderby et al.): a deterministic upward pass gives each layer a Gaussian
      N(mu_i, sigma_i); then downward, q(z_L | x) is the top one, and q(z_i | z_{i+1}, x) combines
      layer i's with the generative p(z_i | z_{i+1}) by their precisions.

    The prior p(z_L) (`prior`) is N(0, I), or the VampPrior: the mixture (1/K) sum_k q(z_L | u_k)
    over K = `pseudo_inputs` learned pseudo-images u_k (clipped to [0, 1]), whose components take
    the Gaussian part of the posterior along the posterior means (the flow is not applied to them).
    With `posterior_flow` = T, each layer's posterior sample goes through T inverse autoregressive
    flow steps, conditioned on a context vector from that layer's inference network; log q counts
    their log-determinants.

    Trained on the k-sample importance-weighted bound (k = 1: the ELBO), each log-weight
    log p(x, z) - log q(z | x) summed over every layer. `reconstruction_loss` and `kl_loss` are the
    single-sample terms: -log p(x | z_1) and log q(z | x) - log p(z), Monte Carlo estimates.

    The model's code (`encode`, the sampler, interpolation, traversals) is the top layer z_L; it
    decodes (`decode`) through the means of the lower layers. `reconstruct` keeps every layer's
    posterior mean.

    Args:
        stochastic_layers: dicts {"hidden": dense sizes, "latent_dim": units}, the image's side first.
        inference: "bottom_up" or "ladder".
        prior: "standard" or "vamp".
        pseudo_inputs: K, the VampPrior's pseudo-inputs.
        posterior_flow: IAF steps per stochastic layer (0: Gaussian posteriors).
        k: importance samples in the training objective.
        **kwargs: the `VAE` arguments; the encoder, decoder and latent size come from the layers.
    """

    def __init__(
        self,
        stochastic_layers=BURDA_LAYERS,
        inference="bottom_up",
        prior="standard",
        pseudo_inputs=500,
        posterior_flow=0,
        k=1,
        **kwargs,
    ):
        layers = [
            {"hidden": list(layer["hidden"]), "latent_dim": int(layer["latent_dim"])} for layer in stochastic_layers
        ]
        if not layers:
            raise ValueError("`stochastic_layers` must list at least one layer. Received: stochastic_layers=[]")
        if inference not in INFERENCE:
            raise ValueError(f"`inference` must be one of {INFERENCE}. Received: inference={inference}")
        if prior not in PRIORS:
            raise ValueError(f"`prior` must be one of {PRIORS}. Received: prior={prior}")
        self.stochastic_layers, self.inference, self.prior = layers, inference, prior
        self.pseudo_inputs, self.posterior_flow, self.k = pseudo_inputs, posterior_flow, k
        for key in ("encoder_layers", "latent_dim", "decoder_layers"):
            kwargs.pop(key, None)
        super().__init__(encoder_layers=layers[0]["hidden"], latent_dim=layers[-1]["latent_dim"], **kwargs)
        sizes = self.latent_sizes
        with _dtype_policy(self.dtype_policy):
            # upward[i - 1]: layer i's inference network, from z_{i-1} (bottom-up) or mu_{i-1} (ladder).
            self.upward = [
                networks.build_encoder(
                    (sizes[i - 1],), layers[i]["hidden"], self.activation, self.heads(i), name=f"q_z{i + 1}"
                )
                for i in range(1, len(layers))
            ]
            # downward[i]: p(z_{i+1} | z_{i+2}) through layer i + 1's hidden sizes, mirrored.
            self.downward = [
                networks.build_encoder(
                    (sizes[i + 1],),
                    networks.mirror(layers[i + 1]["hidden"]),
                    self.activation,
                    [("p_mean", sizes[i], None), ("p_log_var", sizes[i], None)],
                    name=f"p_z{i + 1}",
                )
                for i in range(len(layers) - 1)
            ]
        # Layer 1 draws with the VAE's `sampling`; the others with their own streams.
        self.samplings = [self.sampling] + [
            Sampling(seed=_offset(self.seed, 10 + i), dtype="float32", name=f"sampling_z{i + 1}")
            for i in range(1, len(layers))
        ]
        self.flows = self.build_flows()
        if prior == "vamp":
            # Around mid-grey, as in Tomczak and Welling's code (N(0.05, 0.01) behind a hard tanh there).
            self.pseudo_images = self.add_weight(
                shape=(pseudo_inputs, *self.image_shape),
                initializer=keras.initializers.RandomNormal(0.5, 0.05, seed=_offset(self.seed, 20)),
                name="pseudo_images",
            )

    def build_flows(self):
        """Each layer's IAF steps (built, so that their weights exist before loading)."""
        flows = []
        for i, size in enumerate(self.latent_sizes):
            steps = [
                AutoregressiveFlowStep(size, 2 * size, reverse=t % 2 == 1, dtype="float32", name=f"iaf_z{i + 1}_{t}")
                for t in range(self.posterior_flow)
            ]
            for step in steps:
                step.build([(None, size), (None, size)])
            flows.append(steps)
        return flows

    @property
    def latent_sizes(self):
        """Units of each stochastic layer, z_1 first."""
        return [layer["latent_dim"] for layer in self.stochastic_layers]

    def heads(self, i):
        """Layer i's inference heads: its Gaussian, and the context of its flow when it has one."""
        size = self.latent_sizes[i]
        heads = [("z_mean", size, None), ("z_log_var", size, None)]
        return heads + [("context", size, None)] if self.posterior_flow else heads

    def latent_heads(self):
        return self.heads(0)

    def build_networks(self):
        first = self.stochastic_layers[0]
        encoder = networks.build_encoder(self.image_shape, first["hidden"], self.activation, self.heads(0))
        decoder = networks.build_decoder(
            first["latent_dim"],
            networks.mirror(first["hidden"]),
            self.activation,
            self.image_shape,
            self.output_activation,
        )
        return encoder, decoder

    def get_config(self):
        config = super().get_config()
        for key in ("encoder_layers", "latent_dim", "decoder_layers"):
            config.pop(key)
        return {
            **config,
            "stochastic_layers": self.stochastic_layers,
            "inference": self.inference,
            "prior": self.prior,
            "pseudo_inputs": self.pseudo_inputs,
            "posterior_flow": self.posterior_flow,
            "k": self.k,
        }

    # -- inference ---------------------------------------------------------

    def upward_means(self, x, training=False):
        """Each layer's Gaussian heads along the posterior means: [(mean, log_var, context), ...]."""
        heads = [_three(self.encoder(x, training=training))]
        for net in self.upward:
            heads.append(_three(net(heads[-1][0], training=training)))
        return heads

    def draw(self, i, mean, log_var, context):
        """z_i ~ q(z_i | ...) and log q of the draw, through layer i's flow steps."""
        z = self.samplings[i]([mean, log_var])
        log_q = log_normal(z, mean, log_var)
        for step in self.flows[i]:
            z, log_det = step([z, context])
            log_q = log_q - log_det
        return z, log_q

    def sample_posterior(self, x, k=1, training=False):
        """k draws per image of z_1..z_L ~ q(z | x), the batch repeated k times (sample-major).

        Returns:
            (zs: one (k * batch, units) tensor per layer, z_1 first; log q(z | x) of shape (k * batch,)).
        """
        depth = len(self.stochastic_layers)
        if self.inference == "ladder":
            ups = [[_repeat(t, k) for t in heads] for heads in self.upward_means(x, training)]
            zs = [None] * depth
            zs[-1], log_q = self.draw(depth - 1, *ups[-1])
            for i in reversed(range(depth - 1)):
                p_mean, p_log_var = self.conditional_prior(i, zs[i + 1], training)
                mean, log_var = precision_weighted(ups[i][0], ups[i][1], p_mean, p_log_var)
                zs[i], log_q_i = self.draw(i, mean, log_var, ups[i][2])
                log_q = log_q + log_q_i
            return zs, log_q
        heads = [_repeat(t, k) for t in _three(self.encoder(x, training=training))]
        z, log_q = self.draw(0, *heads)
        zs = [z]
        for i, net in enumerate(self.upward, start=1):
            z, log_q_i = self.draw(i, *_three(net(z, training=training)))
            zs.append(z)
            log_q = log_q + log_q_i
        return zs, log_q

    # -- the generative model ----------------------------------------------

    def pseudo_posterior(self, training=False):
        """The VampPrior's components: the top layer's (mean, log_var) of each pseudo-input, (K, units)."""
        mean, log_var, _ = self.upward_means(ops.clip(self.pseudo_images, 0.0, 1.0), training)[-1]
        return ops.cast(mean, "float32"), ops.cast(log_var, "float32")

    def log_prior(self, z_top, training=False):
        """log p(z_L) per row."""
        if self.prior == "vamp":
            return log_mixture(z_top, *self.pseudo_posterior(training))
        return log_standard_normal(z_top)

    def conditional_prior(self, i, z_above, training=False):
        """(mean, log_var) of p(z_{i+1} | z_{i+2}) (0-based i: layer i's given layer i + 1's draw)."""
        mean, log_var = self.downward[i](z_above, training=training)
        return mean, _bounded(log_var)

    def log_latent_joint(self, zs, training=False):
        """log p(z_1, ..., z_L) per row."""
        log_p = self.log_prior(zs[-1], training)
        for i in range(len(self.downward)):
            log_p = log_p + log_normal(zs[i], *self.conditional_prior(i, zs[i + 1], training))
        return log_p

    def importance_log_weights(self, x, y=None, k=None, training=False):
        """log p(x, z_i) - log q(z_i | x) of k draws per image: (log_w (k, batch), log p(x | z) (k * batch,),
        log p(z) - log q(z | x) (k * batch,))."""
        k = k or self.k
        target, noisy = self.prepare_inputs(x, training)
        zs, log_q = self.sample_posterior(noisy, k, training)
        logits = self.decode_logits(zs[0], training=training)
        pixels = math.prod(self.image_shape)
        logits = ops.reshape(logits, (k, -1, pixels))
        log_px = ops.reshape(
            -self.reconstruction_loss(ops.reshape(target, (1, -1, pixels)), logits, batch_dims=2), (-1,)
        )
        log_prior_ratio = self.log_latent_joint(zs, training) - log_q
        return ops.reshape(log_px + log_prior_ratio, (k, -1)), log_px, log_prior_ratio

    def compute_losses(self, x, y=None, training=False):
        _, log_px, log_prior_ratio = self.importance_log_weights(x, y, training=training)
        # The KL weight (warm-up, beta) scales log p(z) - log q(z | x) inside each weight.
        weight = ops.cast(self.kl_weight, log_px.dtype)
        log_w = ops.reshape(log_px + weight * log_prior_ratio, (self.k, -1))
        bound = ops.logsumexp(log_w, axis=0) - math.log(self.k)
        return {
            "loss": -ops.mean(bound),
            "reconstruction_loss": -ops.mean(log_px),
            "kl_loss": -ops.mean(log_prior_ratio),
        }

    # -- the graph and numpy conveniences -----------------------------------

    def posterior_means(self, x, training=False):
        """Each layer's posterior mean, z_1 first (the ladder's combined with the means above)."""
        ups = self.upward_means(x, training)
        if self.inference == "bottom_up":
            return [heads[0] for heads in ups]
        means = [None] * len(ups)
        means[-1] = ups[-1][0]
        for i in reversed(range(len(ups) - 1)):
            p_mean, p_log_var = self.conditional_prior(i, means[i + 1], training)
            means[i], _ = precision_weighted(ups[i][0], ups[i][1], p_mean, p_log_var)
        return means

    def encode_tensor(self, x, labels=None, training=False):
        return self.posterior_means(x, training)[-1]

    def call(self, inputs, training=False):
        return self.decoder(self.posterior_means(inputs, training)[0], training=training)

    def decode_tensor(self, z, labels=None, training=False):
        """Images for top-layer codes, through the means of p(z_i | z_{i+1})."""
        for net in reversed(self.downward):
            z, _ = net(z, training=training)
        return self.decoder(z, training=training)

    def code_networks(self):
        image = keras.Input(shape=self.image_shape, name="image")
        mean, log_var, _ = self.upward_means(image)[-1]
        code = keras.Input(shape=(self.latent_dim,), name="z")
        return (
            keras.Model(image, [mean, log_var], name="encoder"),
            keras.Model(code, self.decode_tensor(code), name="decoder"),
        )

    def encode(self, x, labels=None, batch_size=PREDICT_BATCH):
        """Top-layer posterior means (numpy in, numpy out)."""
        return _batched(lambda t: self.encode_tensor(t), _floats(x), batch_size)

    def encode_layers(self, x, batch_size=PREDICT_BATCH):
        """Every layer's posterior means, z_1 first (numpy in, a list of numpy arrays out)."""
        per_batch = [
            [ops.convert_to_numpy(m) for m in self.posterior_means(ops.convert_to_tensor(part))]
            for part in np.array_split(_floats(x), max(1, math.ceil(len(x) / batch_size)))
        ]
        return [np.concatenate(layer) for layer in zip(*per_batch)]

    def encode_distribution(self, x, labels=None, batch_size=PREDICT_BATCH):
        """(mean, log_var) of the top layer's Gaussian along the posterior means (numpy in, numpy out)."""
        both = _batched(lambda t: ops.stack(self.upward_means(t)[-1][:2], axis=1), _floats(x), batch_size)
        return both[:, 0], both[:, 1]

    def decode(self, z, labels=None, batch_size=PREDICT_BATCH):
        """Images for top-layer codes z (numpy in, numpy out)."""
        return _batched(lambda t: self.decode_tensor(t), _floats(z), batch_size)

    def prior_sample(self, n, seed=None):
        """n top-layer codes drawn from the prior (numpy)."""
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((n, self.latent_dim)).astype("float32")
        if self.prior == "standard":
            return noise
        means, log_vars = (ops.convert_to_numpy(t) for t in self.pseudo_posterior())
        component = rng.integers(0, self.pseudo_inputs, size=n)
        return (means[component] + np.exp(0.5 * log_vars[component]) * noise).astype("float32")

    def code_metrics(self, x, labels=None):
        """Active units of every stochastic layer (Burda et al.'s Cov_x(E_q[z_u]) > 0.01), z_1 first."""
        means = self.encode_layers(x)
        return {
            "active_units_per_layer": [int((m.var(axis=0) > 0.01).sum()) for m in means],
            "layer_units": self.latent_sizes,
        }


def _three(heads):
    """(mean, log_var, context) from an inference network's heads; the context is None without a flow."""
    heads = list(heads)
    return heads[0], _bounded(heads[1]), heads[2] if len(heads) > 2 else None


def _bounded(log_var):
    """Log-variances clipped to `LOG_VAR_RANGE`: a conditional Gaussian whose variance runs to 0 or
    to infinity would make its log-density overflow (Tomczak and Welling's code clips to [-6, 2])."""
    return ops.clip(log_var, *LOG_VAR_RANGE)


def _repeat(t, k):
    return None if t is None else ops.concatenate([t] * k, axis=0) if k > 1 else t


def _batched(fn, x, batch_size):
    """fn over x in batches, numpy in and out (eager: these are the numpy conveniences)."""
    parts = [
        ops.convert_to_numpy(fn(ops.convert_to_tensor(x[start : start + batch_size])))
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,), "float32")
