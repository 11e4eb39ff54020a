"""Custom layers: the reparametrization `Sampling`, input `Corruption`, dynamic binarization, the
VQ-VAE's `VectorQuantizer`, the inverse autoregressive flow's `AutoregressiveFlowStep`, and the
conv networks' `Conv2D` / `Conv2DTranspose`.

Each random layer owns a `keras.random.SeedGenerator`: unseeded random calls fail inside
traced JAX code, and a seeded generator makes runs repeatable on every backend.
"""

import keras
import numpy as np
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


def _check_conv(layer):
    """kerasae's conv layers compute "same"-padded, channels-last, undilated convolutions only."""
    settings = {
        "padding": (layer.padding, "same"),
        "data_format": (layer.data_format, "channels_last"),
        "dilation_rate": (tuple(layer.dilation_rate), (1, 1)),
        "output_padding": (getattr(layer, "output_padding", None), None),
    }
    for name, (value, supported) in settings.items():
        if value != supported:
            raise ValueError(
                f"kerasae.layers.{type(layer).__name__} supports {name}={supported!r} only. Received: {name}={value!r}"
            )


@keras.saving.register_keras_serializable(package="kerasae")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` ("same" padding) computed by `kerasae.backend.conv`: the same weights,
    config and outputs, in the form each backend runs fastest (JAX on a CPU: one matrix product of
    each output pixel's taps, see `backend/jax_conv.py`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_conv(self)

    def convolution_op(self, inputs, kernel):
        return backend.conv(inputs, ops.convert_to_tensor(kernel), self.strides)


@keras.saving.register_keras_serializable(package="kerasae")
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` ("same" padding) computed by `kerasae.backend.conv_transpose`:
    the same weights, config and outputs. On JAX on a CPU, one matrix product and an overlapping add
    ("col2im"): a training step of `recipes/conv-vae.yaml` takes ~55 ms there, against ~1 s with
    Keras's layer, whose gradient XLA compiles poorly for a CPU."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_conv(self)

    def call(self, inputs):
        outputs = backend.conv_transpose(inputs, ops.convert_to_tensor(self.kernel), self.strides)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


def _build_now(layer):
    """A weightless layer is built at once, as Keras's own GaussianNoise is."""
    if private.available("keras.Layer._build_at_init"):
        layer._build_at_init()
    else:
        layer.built = True


@keras.saving.register_keras_serializable(package="kerasae")
class VectorQuantizer(keras.layers.Layer):
    """Replaces each `code_dim`-vector of its input by the nearest of `codebook_size` codebook
    vectors (van den Oord, Vinyals and Kavukcuoglu, 2017).

    Takes vectors z of shape (..., code_dim); returns (straight-through, quantized, indices). The
    straight-through output, `z + stop_gradient(e - z)`, has the values of the codebook vectors e
    and passes gradients to z, so the encoder is trained as if there were no quantization; the
    quantized output e carries the codebook's gradient (the codebook loss).

    The codebook learns either from the VQ-VAE's codebook loss (`ema=False`: it is trainable) or
    as an exponential moving average of the vectors each code is assigned (`ema=True`, decay
    `decay`: k-means steps, as in the paper's appendix; it is then not trainable). With `ema`, a
    code whose average use per training batch falls under `restart_share` of an even share is
    dead and is restarted, in training, at one of the batch's vectors worst served by the codebook
    (largest distance to their code), so that no code stays unused.

    Args:
        codebook_size: number of codebook vectors K.
        code_dim: size of each vector D.
        ema: learn the codebook by moving averages instead of gradients.
        decay: the moving averages' decay.
        restart_share: use under which an EMA code is restarted, as a share of N / K (N vectors
            per batch); 0 disables restarts.
    """

    def __init__(self, codebook_size=512, code_dim=16, ema=True, decay=0.99, restart_share=0.03, **kwargs):
        super().__init__(**kwargs)
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.ema, self.decay, self.restart_share = ema, decay, restart_share
        init = keras.initializers.RandomUniform(-1.0, 1.0, seed=0)
        self.embeddings = self.add_weight(
            shape=(codebook_size, code_dim), initializer=init, trainable=not ema, name="embeddings"
        )
        # Assignments per training batch, moving average: what dead-code restarts and the EMA read.
        self.usage = self.add_weight(
            shape=(codebook_size,), initializer="ones", trainable=False, name="usage", dtype="float32"
        )
        if ema:  # sums of the vectors assigned to each code, moving average (embeddings = sum / usage)
            self.assigned_sum = self.add_weight(
                shape=(codebook_size, code_dim), initializer=init, trainable=False, name="assigned_sum"
            )
        self.built = True

    def get_config(self):
        return {
            **super().get_config(),
            "codebook_size": self.codebook_size,
            "code_dim": self.code_dim,
            "ema": self.ema,
            "decay": self.decay,
            "restart_share": self.restart_share,
        }

    def nearest(self, vectors):
        """(indices of the nearest codes, squared distances to them) of vectors (N, D)."""
        codebook = ops.cast(self.embeddings, "float32")
        distances = (
            ops.sum(ops.square(vectors), axis=1, keepdims=True)
            - 2.0 * ops.matmul(vectors, ops.transpose(codebook))
            + ops.sum(ops.square(codebook), axis=1)[None, :]
        )
        indices = ops.argmin(distances, axis=1)
        return indices, ops.min(distances, axis=1)

    def lookup(self, indices):
        """The codebook vectors of integer indices, shape indices.shape + (D,)."""
        return ops.take(ops.cast(self.embeddings, "float32"), ops.cast(indices, "int32"), axis=0)

    def call(self, inputs, training=False):
        z = ops.cast(inputs, "float32")
        flat = ops.reshape(z, (-1, self.code_dim))
        indices, distances = self.nearest(ops.stop_gradient(flat))
        quantized = ops.reshape(self.lookup(indices), ops.shape(z))
        if training:
            self._update(ops.stop_gradient(flat), indices, distances)
        return z + ops.stop_gradient(quantized - z), quantized, ops.reshape(indices, ops.shape(z)[:-1])

    def _update(self, flat, indices, distances):
        """One batch's moving averages, EMA codebook step and dead-code restarts."""
        onehot = ops.one_hot(indices, self.codebook_size, dtype="float32")
        counts = ops.sum(onehot, axis=0)
        usage = self.decay * self.usage + (1.0 - self.decay) * counts
        if not self.ema:
            self.usage.assign(usage)
            return
        assigned_sum = self.decay * self.assigned_sum + (1.0 - self.decay) * ops.matmul(ops.transpose(onehot), flat)
        n = ops.cast(ops.shape(flat)[0], "float32")
        if self.restart_share > 0:
            dead = (usage < self.restart_share * n / self.codebook_size)[:, None]
            # Dead code j takes the batch's j-th worst-served vector.
            worst = ops.argsort(-distances)
            rows = ops.mod(ops.arange(self.codebook_size), ops.cast(n, "int32"))
            candidates = ops.take(flat, ops.take(worst, rows), axis=0)
            # A restarted code gets twice the threshold's use: ~70 batches (decay 0.99) to be taken.
            grace = ops.ones_like(usage) * (2.0 * self.restart_share * n / self.codebook_size)
            usage = ops.where(dead[:, 0], grace, usage)
            assigned_sum = ops.where(dead, candidates * grace[:, None], assigned_sum)
        self.usage.assign(usage)
        self.assigned_sum.assign(assigned_sum)
        self.embeddings.assign(assigned_sum / ops.maximum(usage, 1e-5)[:, None])


@keras.saving.register_keras_serializable(package="kerasae")
class AutoregressiveFlowStep(keras.layers.Layer):
    """One step of an inverse autoregressive flow on a posterior sample (Kingma et al. 2016, eqs. 10-14).

    A MADE (Germain et al. 2015) with one hidden layer reads z and the encoder's context h and gives
    m and s, where output i depends on z_1..z_{i-1} only (in the step's order); then
    sigma = sigmoid(s), z' = sigma * z + (1 - sigma) * m, and log|det dz'/dz| = sum_i log sigma_i
    (the Jacobian is triangular). `s` starts near +2 so that a new step is close to the identity.
    Steps alternate the order of the units (`reverse`) so that every unit reads every other one.

    Takes [z (batch, units), h (batch, context)]; returns (z', log_det of shape (batch,)).

    Args:
        units: size of z.
        hidden_units: the MADE's hidden layer.
        reverse: order the units last to first.
    """

    def __init__(self, units, hidden_units, reverse=False, **kwargs):
        super().__init__(**kwargs)
        if units < 1 or hidden_units < 1:
            raise ValueError(
                f"`units` and `hidden_units` must be positive. Received: units={units}, hidden_units={hidden_units}"
            )
        self.units, self.hidden_units, self.reverse = units, hidden_units, reverse
        self.input_mask, self.output_mask = made_masks(units, hidden_units, reverse)

    def build(self, input_shape):
        context = input_shape[1][-1]
        self.z_kernel = self.add_weight(
            shape=(self.units, self.hidden_units), initializer="glorot_uniform", name="z_kernel"
        )
        self.context_kernel = self.add_weight(
            shape=(context, self.hidden_units), initializer="glorot_uniform", name="context_kernel"
        )
        self.hidden_bias = self.add_weight(shape=(self.hidden_units,), initializer="zeros", name="hidden_bias")
        self.m_kernel = self.add_weight(
            shape=(self.hidden_units, self.units), initializer="glorot_uniform", name="m_kernel"
        )
        self.m_bias = self.add_weight(shape=(self.units,), initializer="zeros", name="m_bias")
        self.s_kernel = self.add_weight(shape=(self.hidden_units, self.units), initializer="zeros", name="s_kernel")
        self.s_bias = self.add_weight(shape=(self.units,), initializer=keras.initializers.Constant(2.0), name="s_bias")

    def call(self, inputs):
        z, h = inputs
        input_mask = ops.convert_to_tensor(self.input_mask, dtype=z.dtype)
        output_mask = ops.convert_to_tensor(self.output_mask, dtype=z.dtype)
        hidden = ops.elu(
            ops.matmul(z, self.z_kernel * input_mask) + ops.matmul(h, self.context_kernel) + self.hidden_bias
        )
        m = ops.matmul(hidden, self.m_kernel * output_mask) + self.m_bias
        s = ops.matmul(hidden, self.s_kernel * output_mask) + self.s_bias
        sigma = ops.sigmoid(s)
        return sigma * z + (1.0 - sigma) * m, ops.sum(ops.log_sigmoid(s), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[0], input_shape[0][:-1]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "hidden_units": self.hidden_units,
            "reverse": self.reverse,
        }


def made_masks(units, hidden_units, reverse=False):
    """MADE's masks (Germain et al. 2015): (units, hidden) and (hidden, units), 0/1 float32.

    Unit i (degree d_i in 1..units) feeds a hidden unit of degree k when k >= d_i; output i reads a
    hidden unit of degree k when d_i > k; hence output i depends on the units before it only. With
    one unit there is nothing before it: the hidden units have degree 0 and read only the context.
    """
    degrees = np.arange(1, units + 1)
    if reverse:
        degrees = degrees[::-1]
    hidden = np.arange(hidden_units) % max(units - 1, 1) + 1 if units > 1 else np.zeros(hidden_units, dtype=int)
    input_mask = (hidden[None, :] >= degrees[:, None]).astype("float32")
    output_mask = (degrees[None, :] > hidden[:, None]).astype("float32")
    return input_mask, output_mask
