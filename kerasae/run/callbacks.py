"""The Keras callbacks of a training run.

`Snapshots` keeps what the figures show of the model after chosen epochs; `KLWarmup` ramps a
VAE's KL weight; `Guard` turns a signal or a non-finite loss into a clean stop after the
current step; `StepClock` times the steps; `OneEpoch` ends each `fit` after one epoch, and
`RunScope` shows a caller's callback the whole run as one `fit`.
"""

import math
import time

import keras

from kerasae import backend
from kerasae.backend import private


class Snapshots(keras.callbacks.Callback):
    """After chosen epochs (1-based), keeps what the figures show of the model then:
    reconstructions of fixed test images (the seed's Fig. 2) and, for generative
    models, a latent walk between the first two of them (the seed's Fig. 7)."""

    def __init__(self, images, labels, epochs, steps=10):
        super().__init__()
        self.images = images
        self.labels = labels
        self.epochs = set(epochs)
        self.steps = steps
        self.reconstructions = {}
        self.interpolations = {}

    def arrays(self):
        """The snapshots as named arrays, for a checkpoint."""
        arrays = {f"reconstruction_{e}": a for e, a in self.reconstructions.items()}
        return arrays | {f"interpolation_{e}": a for e, a in self.interpolations.items()}

    def restore(self, arrays):
        """Takes back the snapshots of a checkpoint (`arrays()`)."""
        for key, value in arrays.items():
            kind, epoch = key.rsplit("_", 1)
            getattr(self, f"{kind}s")[int(epoch)] = value

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        with backend.host_local(self.model):
            self.reconstructions[epoch + 1] = self.model.reconstruct(self.images, self.labels)
            if self.model.generative and len(self.images) >= 2:
                labels = None if self.labels is None else tuple(self.labels[:2])
                self.interpolations[epoch + 1] = self.model.interpolate(
                    self.images[0], self.images[1], self.steps, labels
                )


class KLWarmup(keras.callbacks.Callback):
    """Raises a VAE's `kl_weight` linearly from 0 to `beta` over the first epochs."""

    def __init__(self, beta, epochs):
        super().__init__()
        self.beta = beta
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.beta * min(1.0, epoch / self.epochs))


class Guard(keras.callbacks.Callback):
    """Ends training after the current step on SIGINT/SIGTERM or a loss that is no longer finite."""

    def __init__(self):
        super().__init__()
        self.signal = None
        self.bad_step = None
        self.steps = 0  # steps finished in the current `fit`

    def on_train_begin(self, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = batch + 1
        # A signal after the last step lets the epoch end normally, validation included; without
        # the hook that skips validation in a stopped `fit`, so does a signal at any step.
        last = self.params.get("steps") is not None and batch + 1 >= self.params["steps"]
        mid_epoch = not last and private.available("keras.Model._should_eval")
        if self.bad_step is not None or (self.signal is not None and mid_epoch):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss", 0.0)
        if not math.isfinite(float(loss)) and self.bad_step is None:
            self.bad_step = "validation"


class StepClock(keras.callbacks.Callback):
    """Seconds spent inside training steps: from the first step of each `fit` to its last.

    An epoch's wall-clock time minus these is what it spends outside the steps
    (validation, checkpoints, snapshots, the data's order): metrics.json keeps both.
    """

    def __init__(self):
        super().__init__()
        self.seconds, self.first, self.last = 0.0, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first is None:
            self.first = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()

    def on_train_end(self, logs=None):
        if self.first is not None and self.last is not None:
            self.seconds += self.last - self.first
        self.first = self.last = None

    def take(self):
        """The seconds counted since the last call."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class OneEpoch(keras.callbacks.Callback):
    """Ends `fit` after one epoch: kerasae runs each epoch on its own data order and checkpoints it.

    Runs after every other callback, so `asked` tells whether one of them (EarlyStopping, a time
    budget) had already set `model.stop_training`: that ends the whole run.
    """

    asked = False

    def on_epoch_end(self, epoch, logs=None):
        self.asked = bool(self.model.stop_training)
        self.model.stop_training = True


class RunScope(keras.callbacks.Callback):
    """Shows a caller's callback the whole run as one `fit`.

    kerasae calls `fit` once per epoch (or checkpoint segment); Keras callbacks such as
    EarlyStopping reset their state in `on_train_begin`, so the wrapped callback gets
    `on_train_begin` once, at the start, and `on_train_end` from `end()`, when the run ends.
    """

    def __init__(self, callback):
        super().__init__()
        self.callback, self.started = callback, False
        for hook in (
            "epoch_begin",
            "epoch_end",
            "train_batch_begin",
            "train_batch_end",
            "test_begin",
            "test_end",
            "test_batch_begin",
            "test_batch_end",
        ):
            setattr(self, f"on_{hook}", getattr(callback, f"on_{hook}"))

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_train_begin(self, logs=None):
        if not self.started:
            self.started = True
            self.callback.on_train_begin(logs)

    def end(self, logs=None):
        self.callback.on_train_end(logs)
