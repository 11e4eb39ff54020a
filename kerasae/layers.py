"""Custom layers: the reparametrization `Sampling`, input `Corruption`, dynamic binarization.

Each owns a `keras.random.SeedGenerator`: unseeded random calls fail inside
traced JAX code, and a seeded generator makes runs repeatable on every backend.
"""

import keras
from keras import ops

from kerasae import backend, defaults
from kerasae.backend import private

CORRUPTIONS = ("masking", "gaussian", "salt_and_pepper")
SEED_STATE_KEY = "seed_generator_state"


class SeededLayer(keras.layers.Layer):
    """A weightless layer whose `SeedGenerator` state is saved with the model.

    Keras saves weights, not seed generator states, so a reloaded (or resumed)
    model would replay the random draws of its first steps. These layers store
    the state as their only variable instead.
    """

    def normal(self, shape, dtype):
        return backend.random("normal", shape, dtype, self.seed_generator)

    def uniform(self, shape, dtype):
        return backend.random("uniform", shape, dtype, self.seed_generator)

    def coarse_uniform(self, shape, dtype):
        """Uniform in steps of 2^-16: for Bernoulli draws `u < p`, cheaper on some backends."""
        return backend.coarse_uniform(shape, dtype, self.seed_generator)

    def save_own_variables(self, store):
        store[SEED_STATE_KEY] = ops.convert_to_numpy(self.seed_generator.state.value)

    def load_own_variables(self, store):
        if SEED_STATE_KEY in store:
            self.seed_generator.state.assign(store[SEED_STATE_KEY])


@keras.saving.register_keras_serializable(package="kerasae")
class Sampling(SeededLayer):
    """Draws z ~ N(z_mean, exp(z_log_var)) with the reparametrization trick.

    z = z_mean + sigma * eps with sigma = exp(0.5 * z_log_var) and eps ~ N(0, I).
    The seed document writes `N(0, 1) * sigma^2 + mu`; that would give the
    samples a variance of sigma^4. The standard deviation, sigma, is the right
    scale, and is what this layer uses. The noise is outside the graph's
    parameters, so gradients flow to z_mean and z_log_var.

    Args:
        seed: seed of the layer's `SeedGenerator`.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        _build_now(self)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = self.normal(ops.shape(z_mean), z_mean.dtype)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerasae")
class Corruption(SeededLayer):
    """Corrupts inputs during training only, with fresh noise every call.

    Args:
        kind: `"masking"` (zero a random fraction `p` of the entries: the seed's
            "20% noise"), `"gaussian"` (add N(0, sigma^2)) or `"salt_and_pepper"`
            (set a fraction `p` of the entries to 0 or 1, evenly).
        p: fraction of entries corrupted by masking and salt-and-pepper noise.
        sigma: standard deviation of gaussian noise.
        seed: seed of the layer's `SeedGenerator`.
    """

    def __init__(self, kind="masking", p=defaults.MASKING_P, sigma=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if kind not in CORRUPTIONS:
            raise ValueError(f"`kind` must be one of {CORRUPTIONS}. Received: kind={kind}")
        self.kind = kind
        self.p = p
        self.sigma = sigma
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        _build_now(self)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return self.corrupt(inputs)

    def corrupt(self, inputs):
        """Always corrupts (for figures and `denoise` demos outside training)."""
        shape, dtype = ops.shape(inputs), inputs.dtype
        if self.kind == "gaussian":
            return inputs + self.sigma * self.normal(shape, dtype)
        u = self.coarse_uniform(shape, dtype)
        hit = ops.cast(u < self.p, dtype)
        if self.kind == "masking":
            return inputs * (1.0 - hit)
        # Salt and pepper: within the hit entries, u / p is again uniform on [0, 1).
        salt = ops.cast(u < 0.5 * self.p, dtype)
        return inputs * (1.0 - hit) + salt

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "p": self.p, "sigma": self.sigma, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerasae")
class DynamicBinarization(SeededLayer):
    """Redraws binary images x_b ~ Bernoulli(x) in every training step.

    Dynamically binarized MNIST (as in Burda et al.'s IWAE paper): grey levels are
    read as probabilities and every epoch sees a new draw. Outside training the
    inputs pass through unchanged (held-out data is binarized once, up front).

    Args:
        seed: seed of the layer's `SeedGenerator`.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        _build_now(self)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        u = self.coarse_uniform(ops.shape(inputs), inputs.dtype)
        return ops.cast(u < inputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _build_now(layer):
    """A weightless layer is built at once, as Keras's own GaussianNoise is."""
    if private.available("keras.Layer._build_at_init"):
        layer._build_at_init()
    else:
        layer.built = True
