"""The PyTorch backend: its `Trainer` and random draws.

Laid out as Keras's `keras/src/backend/torch/trainer.py`: the model's `compute_losses` is
differentiated by `backward()`, and Adam's update runs as one fused PyTorch kernel.
"""

import math
import os
import types

import keras
import torch

from kerasae.backend import private
from kerasae.backend.common import LossTracking, no_feed

array_feed = array_batches = no_feed


def random(kind, shape, dtype, seed_generator):
    """`keras.random.normal` or `.uniform` (kind) drawn from a layer's generator."""
    return getattr(keras.random, kind)(shape, dtype=dtype, seed=seed_generator)


def coarse_uniform(shape, dtype, seed_generator):
    """PyTorch's generator does not gain from 16-bit draws: a plain uniform."""
    return random("uniform", shape, dtype, seed_generator)


def hardware():
    """The GPUs PyTorch sees, else the CPU's cores, in words."""
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(gpus)} x {gpus[0]}" if gpus else f"CPU, {os.cpu_count()} cores"


def _fusable():
    return private.available(
        "keras.optimizers.Adam._parallel_update_step, _momentums, _velocities, _get_variable_index"
    ) and private.available("torch._fused_adam_")


def _fused_adam_update(optimizer, grads, variables, learning_rate):
    """Keras's Adam update of m, v and the weights in one pass of torch's fused kernel, where
    Keras's torch Adam runs nine `_foreach` passes over them (~7x slower on a CPU: ~2.3 ms a
    step for the seed's VAE, against ~0.35 ms). Keras divides by sqrt(v) + eps, torch by
    sqrt(v) / sqrt(1 - beta_2^t) + eps: the eps passed is scaled so that the two agree.
    AdamW's decay, clipping, EMA and the step counter stay with Keras's `apply` around this."""
    weights = [v.value for v in variables]
    grads = list(grads)
    if any(w.device.type != "cpu" or g.dtype != w.dtype for w, g in zip(weights, grads)):
        return optimizer._keras_update_step(grads, variables, learning_rate)
    index = optimizer._get_variable_index
    step = float(optimizer.iterations) + 1
    torch._fused_adam_(
        weights,
        grads,
        [optimizer._momentums[index(v)].value for v in variables],
        [optimizer._velocities[index(v)].value for v in variables],
        [],
        [torch.tensor(step, dtype=torch.float32)] * len(weights),
        lr=float(learning_rate),
        beta1=optimizer.beta_1,
        beta2=optimizer.beta_2,
        weight_decay=0.0,
        eps=optimizer.epsilon / math.sqrt(1 - optimizer.beta_2**step),
        amsgrad=False,
        maximize=False,
    )


def _fuse(optimizer):
    """Gives a Keras Adam or AdamW (not AMSGrad) the fused update on CPU tensors; the class,
    and so the saved config, stay Keras's."""
    if isinstance(optimizer, keras.optimizers.Adam) and not optimizer.amsgrad and _fusable():
        if not hasattr(optimizer, "_keras_update_step"):
            optimizer._keras_update_step = optimizer._parallel_update_step
            optimizer._parallel_update_step = types.MethodType(_fused_adam_update, optimizer)


class Trainer(LossTracking):
    """`train_step` / `test_step` of a kerasae model on PyTorch (mixed into `Autoencoder`)."""

    # (Fused here, not in `compile`: Keras skips `compile_from_config` for a custom `compile`.)
    def train_step(self, data):
        _fuse(self.optimizer)
        x, y = self._data(data)
        self.zero_grad()
        losses = self.compute_losses(x, y, training=True)
        self.optimizer.scale_loss(losses["loss"]).backward()  # mixed_float16's loss scale; else as is
        grads = [v.value.grad for v in self.trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(grads, self.trainable_weights)
        return self.update_loss_metrics(losses)

    def test_step(self, data):
        x, y = self._data(data)
        with torch.no_grad():
            losses = self.compute_losses(x, y, training=False)
        return self.update_loss_metrics(losses)
