"""The conditional VAE (Sohn, Lee and Yan, 2015): generation steered by a class label."""

import keras
import numpy as np
from keras import ops

from kerasae.errors import LabelsError
from kerasae.models.autoencoder import PREDICT_BATCH, _floats, line, run
from kerasae.models.vae import VAE


@keras.saving.register_keras_serializable(package="kerasae")
class CVAE(VAE):
    """A VAE whose encoder and decoder both see the one-hot label y.

    q(z | x, y) and p(x | z, y): the code is free to hold style (slant, width)
    while the label holds the class, so `generate(labels=[3, 3, 7])` draws the
    digits asked for. Trained with `fit(images, labels)` (`inputs_for`).

    Args:
        num_classes: number of labels (10 for MNIST digits).
        **kwargs: the `VAE` arguments.
    """

    def __init__(self, num_classes=10, **kwargs):
        self.num_classes = num_classes  # read by condition_dim() while the networks are built
        super().__init__(**kwargs)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}

    def condition_dim(self):
        return self.num_classes

    def one_hot(self, labels):
        """Integer labels as one-hot rows."""
        return ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes)

    def call_inputs(self, x, labels=None):
        return [x, labels]

    def split_inputs(self, inputs):
        x, labels = inputs
        return x, labels

    def encoder_inputs(self, x, labels=None):
        if isinstance(x, np.ndarray):  # Keras may call a model eagerly on numpy: no mixed inputs
            x = ops.convert_to_tensor(x)
        return [x, self.one_hot(labels)]

    def decoder_inputs(self, z, labels=None):
        return ops.concatenate([z, ops.cast(self.one_hot(labels), z.dtype)], axis=-1)

    # -- numpy conveniences ------------------------------------------------

    def _labels(self, labels, n):
        if labels is None:
            raise LabelsError(
                f"a {type(self).__name__} needs `labels`, one integer class per image; give them from Python "
                "(e.g. model.score(images, labels), model.denoise(images, labels))"
            )
        labels = np.asarray(labels, dtype="int32").reshape(-1)
        if len(labels) != n or (n and (labels.min() < 0 or labels.max() >= self.num_classes)):
            raise LabelsError(
                f"`labels` must be {n} integers in [0, {self.num_classes}). Received: labels={labels[:10]}..."
            )
        return labels

    def _one_hot_np(self, labels, n):
        return np.eye(self.num_classes, dtype="float32")[self._labels(labels, n)]

    def model_inputs(self, x, labels=None):
        x = _floats(x)
        return [x, self._labels(labels, len(x))]

    def inputs_for(self, x, labels=None):
        return x, self._labels(labels, len(x))

    def encoder_feed(self, x, labels=None):
        x = _floats(x)
        return [x, self._one_hot_np(labels, len(x))]

    def decode(self, z, labels=None, batch_size=PREDICT_BATCH):
        z = _floats(z)
        joined = np.concatenate([z, self._one_hot_np(labels, len(z))], axis=-1)
        return run(self.decoder, joined, batch_size)

    def default_labels(self, n):
        return list(np.arange(n) % self.num_classes)

    def generate(self, n=None, seed=None, labels=None, digits=None):
        """Draws images of the given classes (`labels`, or their older name `digits`; default
        0, 1, ... cycling over n images) from the prior."""
        labels = digits if labels is None else labels
        labels = self.default_labels(n) if labels is None else np.asarray(labels)
        return self.decode(self.prior_sample(len(labels), seed), labels)

    def interpolate(self, x_a, x_b, steps=10, labels=None):
        """Walks between two images' latent means; each is encoded with its own label
        (`labels`: (label of x_a, label of x_b), required) and the walk is decoded with x_a's."""
        labels = self._labels(labels, 2)
        z = self.encode(np.stack([x_a, x_b]), labels)
        return self.decode(line(z[0], z[1], steps), [labels[0]] * steps)
