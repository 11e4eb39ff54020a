"""The deterministic autoencoder (the seed's AE, linear AE) and the denoising AE."""

import contextlib
import math

import keras
import numpy as np
from keras import ops

from kerasae import backend, defaults, families, likelihood, losses, networks
from kerasae.layers import Corruption, DynamicBinarization

PREDICT_BATCH = defaults.PREDICT_BATCH
# Up to this many inputs, the numpy conveniences call the network directly instead of `predict`,
# as Keras's docs advise for inputs that fit in one batch: `predict` sets up a data adapter each
# call, ~130 ms on TensorFlow against ~7 ms for a call (one decoding behind a slider of `kerasae serve`).
DIRECT_CALL_MAX = 64
# Items scored per block by `score` (importance samples multiply a block's decoding work, not its memory).
SCORE_BLOCK = 10_000


@keras.saving.register_keras_serializable(package="kerasae")
class Autoencoder(backend.Trainer, keras.Model):
    """x -> encoder -> z -> decoder -> x_hat, trained to reconstruct its input.

    The whole graph is built here from plain values, and `get_config` returns
    exactly these arguments, so `keras.saving.load_model` rebuilds the model on
    any backend after `import kerasae`.

    Args:
        image_shape: (H, W, C) of the inputs.
        encoder_layers: hidden layers, input side first: dense sizes or conv specs
            (dicts with filters, kernel_size, strides). Empty for the seed's
            one-hidden-layer AE, where the latent units are the hidden layer.
        activation: activation of the hidden layers.
        latent_dim: size of the code z.
        latent_activation: activation of the code layer ("sigmoid" in the seed).
        decoder_layers: hidden layers of the decoder, latent side first; `None`
            mirrors the encoder.
        output_activation: activation of the reconstruction.
        reconstruction: "bce" (binary cross-entropy, for inputs in [0, 1]) or
            "mse" (the seed's 1/2 * sum of squared errors, for real values);
            both summed over the pixels of an image.
        corruption: `None`, or a dict of `Corruption` arguments (kind, p, sigma)
            applied to the inputs in training: the denoising criterion.
        dynamic_binarization: redraw binary training images ~ Bernoulli(x) each step.
        seed: seed of the model's random layers.
        anomaly: how `score` scores items and where `flag` draws the line: a dict of "score"
            (one of `SCORES`; default "elbo" for variational families, else "reconstruction"),
            "samples" (importance samples per item for "elbo" and "nll") and "threshold" (set
            by `calibrate` after training; `None` before).
    """

    loss_names = ("loss", "reconstruction_loss")

    def __init__(
        self,
        image_shape=(28, 28, 1),
        encoder_layers=(),
        activation="relu",
        latent_dim=32,
        latent_activation="linear",
        decoder_layers=None,
        output_activation="sigmoid",
        reconstruction="bce",
        corruption=None,
        dynamic_binarization=False,
        seed=None,
        anomaly=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if reconstruction not in ("bce", "mse"):
            raise ValueError(f"`reconstruction` must be 'bce' or 'mse'. Received: reconstruction={reconstruction}")
        self.image_shape = tuple(image_shape)
        self.encoder_layers = list(encoder_layers)
        self.activation = activation
        self.latent_dim = latent_dim
        self.latent_activation = latent_activation
        self.decoder_layers = None if decoder_layers is None else list(decoder_layers)
        self.output_activation = output_activation
        self.reconstruction = reconstruction
        self.corruption_config = None if corruption is None else dict(corruption)
        self.dynamic_binarization = dynamic_binarization
        self.seed = seed
        anomaly = {"score": self.default_score, "samples": defaults.SCORE_SAMPLES, "threshold": None, **(anomaly or {})}
        if anomaly["score"] not in self.scores:
            raise ValueError(f"`anomaly['score']` must be one of {self.scores}. Received: {anomaly['score']}")
        self.score_kind, self.score_samples = anomaly["score"], anomaly["samples"]
        self.threshold, self.threshold_quantile = anomaly["threshold"], anomaly.get("quantile")

        # The networks' layers take the model's dtype policy (`dtype`, e.g. "mixed_bfloat16"), which
        # its config keeps: a reloaded model computes as the trained one did.
        with _dtype_policy(self.dtype_policy):
            self.encoder, self.decoder = self.build_networks()
        # Random layers draw in float32 under a mixed-precision policy too: a float16 uniform
        # would round the probabilities of Bernoulli pixels and masks.
        self.corruption = (
            None if corruption is None else Corruption(**corruption, seed=_offset(seed, 1), dtype="float32")
        )
        self.binarization = (
            DynamicBinarization(seed=_offset(seed, 2), dtype="float32") if dynamic_binarization else None
        )
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self.built = True

    # What a model can do, for callers to ask (never to probe with hasattr): a generative model
    # was trained towards a prior over codes, N(0, I), and `generate` samples it; a variational
    # one also has a posterior (ELBO, NLL, `encode_distribution`); a conditional one
    # (`conditional`) needs a label per image. Every model interpolates, and every
    # model generates through a density fitted to its codes (`kerasae.assess.samplers`).
    # Labels: every method takes them; unconditional families ignore them, a conditional one
    # joins them to the encoder's and the decoder's inputs through these hooks.
    # The family table says which (`kerasae.families`); a class no entry names inherits its parent's.
    generative, variational, conditional = families.capabilities("Autoencoder")
    # Importance samples per image in the training objective (1: a single-sample loss).
    k = 1
    # The anomaly scores the family can give (`score`): the reconstruction error in data space;
    # variational families also the negative ELBO and the importance-sampled -log p(x).
    scores = ("reconstruction",)
    default_score = "reconstruction"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        said = families.capabilities(cls.__name__)
        if said is not None:
            cls.generative, cls.variational, cls.conditional = said

    @property
    def code_size(self):
        """Numbers per image in the code that `encode` returns and `decode` takes."""
        return self.latent_dim

    def fit_prior(self, x, labels=None):
        """Fits a prior over codes to training images x after training; a prior fixed in advance,
        as N(0, I) is, needs nothing (a VQ-VAE fits its code frequencies)."""

    def code_metrics(self, x, labels=None):
        """Metrics of the codes of test images x beyond every family's (a VQ-VAE's code use)."""
        return {}

    def build_networks(self):
        """(encoder, decoder): image -> code -> image, from the constructor's layer lists."""
        condition = self.condition_dim()
        hidden = networks.mirror(self.encoder_layers) if self.decoder_layers is None else self.decoder_layers
        encoder = networks.build_encoder(
            self.image_shape, self.encoder_layers, self.activation, self.latent_heads(), condition_dim=condition
        )
        decoder = networks.build_decoder(
            self.latent_dim + condition, hidden, self.activation, self.image_shape, self.output_activation
        )
        return encoder, decoder

    def condition_dim(self):
        """Size of the condition joined to encoder and decoder inputs (0: none)."""
        return 0

    def encoder_inputs(self, x, labels=None):
        """What the encoder takes for images x (a conditional family adds the label)."""
        return x

    def decoder_inputs(self, z, labels=None):
        """What the decoder takes for codes z (a conditional family adds the label)."""
        return z

    def latent_heads(self):
        """The encoder's output layers: (name, size, activation)."""
        return [("z", self.latent_dim, self.latent_activation)]

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "encoder_layers": self.encoder_layers,
            "activation": self.activation,
            "latent_dim": self.latent_dim,
            "latent_activation": self.latent_activation,
            "decoder_layers": self.decoder_layers,
            "output_activation": self.output_activation,
            "reconstruction": self.reconstruction,
            "corruption": self.corruption_config,
            "dynamic_binarization": self.dynamic_binarization,
            "seed": self.seed,
            "anomaly": {
                "score": self.score_kind,
                "samples": self.score_samples,
                "threshold": self.threshold,
                "quantile": self.threshold_quantile,
            },
        }

    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    # -- the graph ---------------------------------------------------------

    def encode_tensor(self, x, labels=None, training=False):
        """The deterministic code of x (the posterior mean for variational models)."""
        return self.encoder(self.encoder_inputs(x, labels), training=training)

    def _should_eval(self, epoch, validation_freq):
        # kerasae stops `fit` inside an epoch (SIGINT/SIGTERM) to checkpoint it; validating
        # then would draw from the random streams that the resumed run still needs.
        return not self.stop_training and super()._should_eval(epoch, validation_freq)

    def call_inputs(self, x, labels=None):
        """What `call` takes for tensors x (and labels): x, or [x, labels] when conditional."""
        return x

    def split_inputs(self, inputs):
        """(images, labels) of what `call` takes; labels None when unconditional."""
        return inputs, None

    def call(self, inputs, training=False):
        x, labels = self.split_inputs(inputs)
        z = self.encode_tensor(x, labels, training=training)
        return self.decoder(self.decoder_inputs(z, labels), training=training)

    def decode_tensor(self, z, labels=None, training=False):
        """Images for codes z (those `encode_tensor` gives)."""
        return self.decoder(self.decoder_inputs(z, labels), training=training)

    def code_networks(self):
        """(encoder, decoder) as standalone Keras models between images and the model's code, for
        ONNX export: the networks themselves here; a hierarchical VAE composes its layers'."""
        return self.encoder, self.decoder

    def decode_logits(self, z, training=False):
        """The decoder up to, not including, its output activation."""
        for layer in self.decoder.layers[:-1]:
            z = layer(z, training=training)
        return z

    def reconstruction_loss(self, target, logits, batch_dims=1):
        """Per-image reconstruction loss in nats (bce) or 1/2 * SSE (mse); images follow the first
        `batch_dims` axes."""
        if self.reconstruction == "bce":
            if self.output_activation == "sigmoid":
                return losses.bernoulli_nll(target, logits, batch_dims)
            return losses.bce(target, self.decoder.layers[-1](logits), batch_dims=batch_dims)
        return losses.half_squared_error(target, self.decoder.layers[-1](logits), batch_dims)

    def prepare_inputs(self, x, training):
        """(target, model input): binarized targets, and their corrupted copy when denoising."""
        target = self.binarization(x, training=training) if self.binarization is not None else x
        noisy = self.corruption(target, training=training) if self.corruption is not None else target
        return target, noisy

    def compute_losses(self, x, y=None, training=False):
        """The losses of one batch, written once for every backend's train and test step."""
        target, noisy = self.prepare_inputs(x, training)
        code = self.encoder(self.encoder_inputs(noisy, y), training=training)
        logits = self.decode_logits(self.decoder_inputs(code, y), training=training)
        reconstruction = ops.mean(self.reconstruction_loss(target, logits))
        penalties = self.penalties(noisy, code)
        loss = reconstruction
        for weight, value in penalties.values():
            loss = loss + weight * value
        return {"loss": loss, "reconstruction_loss": reconstruction, **{k: v for k, (_, v) in penalties.items()}}

    def penalties(self, x, code):
        """Extra loss terms on the code, {metric name: (weight, per-batch value)}; none here."""
        return {}

    # -- numpy conveniences ------------------------------------------------

    # The numpy methods take `labels` so that every family has one interface: unconditional
    # families ignore them, a conditional one requires and checks them. Callers pass what they
    # have and never ask which kind of model they hold.

    def model_inputs(self, x, labels=None):
        """What `call` (and `predict`) take: images, or [images, labels] when conditional."""
        return _floats(x)

    def default_labels(self, n):
        """Labels for n images drawn without any asked for: the classes in turn when conditional."""
        return None

    def inputs_for(self, x, labels=None):
        """(x, y) for `fit` and `evaluate` of images x: y the labels a conditional model trains
        on (its train step reads them as `y`), None otherwise."""
        return x, None

    def encode(self, x, labels=None, batch_size=PREDICT_BATCH):
        """Codes of images x (numpy in, numpy out)."""
        return run(self.encoder, _floats(x), batch_size)

    def decode(self, z, labels=None, batch_size=PREDICT_BATCH):
        """Images for codes z (numpy in, numpy out)."""
        return run(self.decoder, _floats(z), batch_size)

    def reconstruct(self, x, labels=None, batch_size=PREDICT_BATCH):
        """Reconstructions of images x (numpy in, numpy out)."""
        return run(self, self.model_inputs(x, labels), batch_size)

    def prior_sample(self, n, seed=None):
        """n codes drawn from N(0, I) (numpy)."""
        return np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype("float32")

    def generate(self, n=None, seed=None, labels=None):
        """Decodes n codes drawn from the prior N(0, I): images of shape (n, H, W, C); `labels`,
        one per image, steer a conditional model (n defaults to their number). Only a generative
        model has a prior; any model generates from a fitted sampler (`kerasae.assess.samplers`)."""
        n = len(labels) if n is None and labels is not None else n
        if not self.generative:
            raise ValueError(
                f"A {type(self).__name__} was not trained towards a prior: sample it with a density fitted "
                "to its codes (kerasae.assess.samplers, `kerasae sample ENTRY --sampler gmm`)."
            )
        return self.decode(self.prior_sample(n, seed), labels)

    def interpolate(self, x_a, x_b, steps=10, labels=None):
        """Decodes `steps` codes on the line between the codes of images x_a and x_b; `labels`
        (label of x_a, label of x_b) for a conditional model, which decodes the walk with x_a's."""
        z_a, z_b = self.encode(np.stack([x_a, x_b]), labels)
        return self.decode(line(z_a, z_b, steps), None if labels is None else [labels[0]] * steps)

    # -- anomaly scores ----------------------------------------------------

    def score(self, x, labels=None, batch_size=PREDICT_BATCH, verbose=0):
        """One anomaly score per item of x, higher for more unusual items, in nats (bce
        reconstructions, "elbo", "nll") or 1/2 * sum of squared errors (mse): float64 numpy.

        "reconstruction": the loss of the item's reconstruction from its deterministic code
        (the posterior mean of a variational family), without corruption or sampling. "elbo"
        and "nll" (variational families): the negative ELBO and the importance-sampled -log p(x)
        of `score_samples` posterior draws (`score_kind` says which; both come from the
        constructor's `anomaly`). Items go through in blocks of
        `SCORE_BLOCK`, so memory stays flat however many there are; `verbose=1` shows a progress bar.
        """
        x = _floats(x)
        scores = np.empty(len(x))
        progress = keras.utils.Progbar(len(x), unit_name="item") if verbose else None
        for start in range(0, len(x), SCORE_BLOCK):
            block = slice(start, start + SCORE_BLOCK)
            y = None if labels is None else np.asarray(labels)[block]
            scores[block] = self._block_scores(x[block], y, batch_size)
            if progress is not None:
                progress.update(min(start + SCORE_BLOCK, len(x)))
        return scores

    def _block_scores(self, x, labels, batch_size):
        if self.score_kind == "reconstruction":
            return reconstruction_error(x, self.reconstruct(x, labels, batch_size), self.reconstruction)
        elbo, log_px = likelihood.bounds(self, self.model_inputs(x, labels), len(x), k=self.score_samples)
        return -(elbo if self.score_kind == "elbo" else log_px)

    def reconstruction_score_tensor(self, x, labels=None):
        """The "reconstruction" score of a batch x as a tensor (what `score` computes in numpy):
        the graph serving exports hold."""
        x_hat = self(self.call_inputs(x, labels), training=False)
        size = math.prod(self.image_shape)
        x, x_hat = (ops.reshape(ops.cast(a, "float32"), (-1, size)) for a in (x, x_hat))
        if self.reconstruction == "bce":
            p = ops.clip(x_hat, 1e-7, 1.0 - 1e-7)
            return -ops.sum(x * ops.log(p) + (1.0 - x) * ops.log(1.0 - p), axis=1)
        return 0.5 * ops.sum(ops.square(x - x_hat), axis=1)

    def calibrate(self, x, labels=None, quantile=0.99, batch_size=PREDICT_BATCH):
        """Sets `threshold`, above which `flag` flags items, to the `quantile` of the scores of x,
        held-out items taken as normal (a contamination c is the quantile 1 - c); returns those scores."""
        scores = self.score(x, labels, batch_size)
        self.threshold, self.threshold_quantile = float(np.quantile(scores, quantile)), quantile
        return scores

    def flag(self, x, labels=None, batch_size=PREDICT_BATCH):
        """Whether each item of x scores above the calibrated `threshold` (bool numpy)."""
        if self.threshold is None:
            raise ValueError(f"This {type(self).__name__} has no threshold: call `calibrate` on normal items first.")
        return self.score(x, labels, batch_size) > self.threshold

    def corrupt(self, x):
        """Applies the model's training corruption to x (numpy in, numpy out). Every family
        trained with `corruption` has one: a denoising AE, a denoising VAE (Im et al. 2017), ..."""
        if self.corruption is None:
            raise ValueError(f"This {type(self).__name__} was built without `corruption`: there is none to apply.")
        return ops.convert_to_numpy(self.corruption.corrupt(ops.convert_to_tensor(_floats(x))))

    def denoise(self, x, labels=None, batch_size=PREDICT_BATCH):
        """Restores noisy images x (numpy in, numpy out): the reconstruction of a model trained on
        corrupted inputs against clean targets."""
        return self.reconstruct(x, labels, batch_size)


@keras.saving.register_keras_serializable(package="kerasae")
class DenoisingAutoencoder(Autoencoder):
    """An autoencoder trained to restore corrupted inputs (the seed's DAE).

    Corruption happens inside the training step, with fresh noise every batch,
    and the target is the clean input. Masking noise that zeroes 20% of the
    pixels is the default.
    """

    def __init__(self, corruption=None, **kwargs):
        super().__init__(corruption=corruption or dict(defaults.DENOISING_CORRUPTION), **kwargs)


@contextlib.contextmanager
def _dtype_policy(policy):
    """Layers made in the block take `policy` (Keras gives new layers the global one)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _offset(seed, k):
    return None if seed is None else seed + k


def run(network, inputs, batch_size=PREDICT_BATCH):
    """`network`'s outputs for numpy inputs (an array or a list of arrays), numpy out: a direct call
    for up to `DIRECT_CALL_MAX` inputs, `predict` in batches beyond; on JAX the inputs padded to a
    batch shape already compiled (`backend.padded_rows`)."""
    inputs, n = backend.pad_rows(inputs, batch_size)
    if n > DIRECT_CALL_MAX:
        outputs = network.predict(inputs, batch_size=batch_size, verbose=0)
    else:
        outputs = network(keras.tree.map_structure(ops.convert_to_tensor, inputs), training=False)
    return keras.tree.map_structure(lambda a: ops.convert_to_numpy(a)[:n], outputs)


def reconstruction_error(x, x_hat, kind):
    """Per-item loss of reconstructions x_hat of x, float64: "bce" in nats (outputs clipped to
    [1e-7, 1 - 1e-7]), "mse" 1/2 * the sum of squared errors."""
    x, x_hat = (np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in (x, x_hat))
    if kind == "bce":
        p = np.clip(x_hat, 1e-7, 1.0 - 1e-7)
        return -(x * np.log(p) + (1.0 - x) * np.log1p(-p)).sum(axis=1)
    return 0.5 * ((x - x_hat) ** 2).sum(axis=1)


def _floats(x):
    return np.asarray(x, dtype="float32")


def line(a, b, steps):
    """`steps` points from a to b, ends included."""
    alphas = np.linspace(0.0, 1.0, steps, dtype="float32")[:, None]
    return (1.0 - alphas) * a + alphas * b
