"""The PyTorch backend: its `Trainer` and random draws.

Laid out as Keras's `keras/src/backend/torch/trainer.py`: the model's `compute_losses` is
differentiated by `backward()`, and Adam's update runs as one fused PyTorch kernel. In training,
`compute_losses` runs as a graph of PyTorch operators traced once per batch shape
(`torch_trace.py`), not op by op through Keras.
"""

import contextlib
import math
import os
import types
import warnings

import keras
import numpy as np
import torch
import torch.nn.functional as F

from kerasae.backend import private, torch_trace
from kerasae.backend.common import LossTracking, padded_rows, variable_numpy  # noqa: F401


class _Batches(torch.utils.data.IterableDataset):
    """The batches of tensors, rows in a given order, gathered as they are asked for."""

    def __init__(self, tensors, rows, batch_size):
        super().__init__()
        self.tensors, self.rows, self.batch_size = tensors, rows, batch_size

    def __len__(self):
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.rows), self.batch_size):
            index = self.rows[start : start + self.batch_size]
            yield tuple(t[index] for t in self.tensors)


def array_feed(model, x, y, batch_size):
    """The batches of in-memory arrays in a given row order, for `model`'s `fit`: `feed(rows)`
    returns (a `DataLoader`, its number of batches). The arrays become tensors once (sharing their memory)
    and each batch is one gather: given numpy arrays, Keras's torch trainer slices and converts
    them batch by batch through its own `DataLoader` and collation (~0.5 ms a step)."""
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (x, y) if a is not None)

    def feed(rows):
        batches = _Batches(tensors, torch.from_numpy(np.asarray(rows, dtype="int64")), batch_size)
        return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=_as_is), len(batches)

    return feed


def _as_is(batch):
    return batch


def array_batches(x, y, batch_size):
    """Arrays in order as a `DataLoader` of batches (see `array_feed`)."""
    return array_feed(None, x, y, batch_size)(np.arange(len(x)))[0]


def random(kind, shape, dtype, seed_generator):
    """`keras.random.normal` or `.uniform` (kind) drawn from a layer's generator."""
    return getattr(keras.random, kind)(shape, dtype=dtype, seed=seed_generator)


def coarse_uniform(shape, dtype, seed_generator):
    """PyTorch's generator does not gain from 16-bit draws: a plain uniform."""
    return random("uniform", shape, dtype, seed_generator)


def _pair(strides):
    return tuple(strides) if isinstance(strides, (tuple, list)) else (strides, strides)


def conv(x, kernel, strides):
    """Keras's "same"-padded convolution of channels-last images, as one `F.conv2d` on
    channels-first views: Keras's own op copies the images and kernel to channels-first and pads
    them explicitly, which made conv-vae's step 73 ms against 56 here (in-process A/B).
    "same" pads the extra row and column at the bottom and right, as TensorFlow does."""
    (sh, sw), (kh, kw) = _pair(strides), kernel.shape[:2]
    height, width = x.shape[1:3]
    pad_h = max((-(-height // sh) - 1) * sh + kh - height, 0)
    pad_w = max((-(-width // sw) - 1) * sw + kw - width, 0)
    images = x.permute(0, 3, 1, 2)
    if pad_h % 2 or pad_w % 2:
        images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        pad_h = pad_w = 0
    # A dense kernel: on a batch of one image torch's slow_conv2d backward refuses a permuted view
    # ("grad_weight must be contiguous"); the copy is of a kernel, once a step.
    weight = kernel.permute(3, 2, 0, 1).contiguous()
    y = F.conv2d(images, weight, stride=(sh, sw), padding=(pad_h // 2, pad_w // 2))
    return y.permute(0, 2, 3, 1)


def conv_transpose(x, kernel, strides):
    """Keras's "same"-padded transposed convolution (output = input x strides), as one
    `F.conv_transpose2d` whose (kh - sh) extra rows and columns are cropped as Keras crops them
    (zeros padded instead where the kernel is smaller than its strides)."""
    (sh, sw), (kh, kw) = _pair(strides), kernel.shape[:2]
    height, width = x.shape[1:3]
    y = F.conv_transpose2d(x.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1).contiguous(), stride=(sh, sw))
    top, left = max(kh - sh, 0) // 2, max(kw - sw, 0) // 2
    y = F.pad(y, (-left, sw * width - y.shape[3] + left, -top, sh * height - y.shape[2] + top))
    return y.permute(0, 2, 3, 1)


def sigmoid_cross_entropy(target, logits):
    """-log p(target | logits) of each Bernoulli pixel, as PyTorch's one fused kernel (forward and
    backward) where Keras's ops run seven passes over the pixels each way. Targets broadcast
    (one image against its k importance samples' logits)."""
    logits, target = torch.broadcast_tensors(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


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


def _channels_last_strides(shape):
    """The strides of a dense channels-last (NHWC / NDHWC in memory) tensor of an NCHW shape."""
    strides, step = [], shape[1]
    for size in reversed(shape[2:]):
        strides.insert(0, step)
        step *= size
    return (step, 1, *strides)


def _to_channels_last(tensor):
    """Keras's `_maybe_convert_to_channels_last`, with a real copy where size-1 dimensions let
    a permuted view pass PyTorch's channels-last test. Keras hands its conv kernel (kh, kw, in,
    out) permuted to (out, in, kh, kw); with one output channel, e.g. the decoder's last conv on
    grey images, the view passes that test with strides PyTorch's CPU convolution cannot take
    back: on a batch of one image (slow_conv2d) its backward fails with "grad_weight must be
    contiguous". The copy is of a kernel, once a step; every other tensor is as in Keras."""
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(tensor.ndim)
    if fmt is None or tensor.stride() == _channels_last_strides(tensor.shape):
        return tensor
    return tensor.clone(memory_format=fmt)  # dense channels-last strides, as Keras's copy gives


def _dense_conv_kernel(kernel):
    """Keras's `_transpose_conv_kernel` (its (kh, kw, in, out) kernel permuted to PyTorch's order) as a
    dense copy. A transposed convolution from ONE input channel (a decoder after an encoder whose last
    conv has one filter) hands PyTorch a permuted view whose gradient its CPU backward allocates with
    the view's strides and then refuses on a batch of one image: "grad_weight needs to be contiguous".
    The copy is of a kernel, once a step."""
    return _keras_transpose_conv_kernel(kernel).contiguous()


if private.available("keras.src.backend.torch.nn._maybe_convert_to_channels_last"):
    import keras.src.backend.torch.nn as _keras_torch_nn

    _keras_torch_nn._maybe_convert_to_channels_last = _to_channels_last

if private.available("keras.src.backend.torch.nn._transpose_conv_kernel"):
    import keras.src.backend.torch.nn as _keras_torch_nn

    _keras_transpose_conv_kernel = _keras_torch_nn._transpose_conv_kernel
    _keras_torch_nn._transpose_conv_kernel = _dense_conv_kernel


@contextlib.contextmanager
def _short_groups():
    """Keras's torch epoch iterator gathers `steps_per_execution` batches per call, and warns "Your
    input ran out of data" when an epoch's last group is short, though every batch was used."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


class Trainer(LossTracking):
    """`train_step` / `test_step` of a kerasae model on PyTorch (mixed into `Autoencoder`)."""

    def fit(self, *args, **kwargs):
        with _short_groups():
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with _short_groups():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with _short_groups():
            return super().predict(*args, **kwargs)

    def train_step(self, data):
        return self.update_loss_metrics(self._descend(data, self.trainable_weights))

    # (Fused here, not in `compile`: Keras skips `compile_from_config` for a custom `compile`.)
    def _descend(self, data, weights):
        """One step of gradient descent on a batch; returns its losses, detached."""
        _fuse(self.optimizer)
        x, y = self._data(data)
        self.zero_grad()
        losses = self._training_losses(x, y)
        self.optimizer.scale_loss(losses["loss"]).backward()  # mixed_float16's loss scale; else as is
        grads = [v.value.grad for v in weights]
        with torch.no_grad():
            self.optimizer.apply(grads, weights)
        return {name: value.detach() for name, value in losses.items()}

    def _training_losses(self, x, y):
        """`compute_losses(x, y, training=True)`, replayed from its traced graph where it can be
        (`torch_trace.py`; kept out of Keras's attribute tracking, and not under torch.compile)."""
        if self.jit_compile:
            return self.compute_losses(x, y, training=True)
        traced = self.__dict__.get("_traced_losses")
        if traced is None:
            traced = self.__dict__["_traced_losses"] = torch_trace.TracedLosses(self)
        return traced(x, y)

    def make_train_function(self, force=False):
        """`steps_per_execution` steps per call: Keras's torch trainer takes one batch per call,
        and its loop around each call (the epoch iterator, every callback's batch hooks) and the
        loss trackers' update cost a small model's step ~2.3 ms, a fifth of it. Here a group of
        batches trains in one Python loop, as TensorFlow and JAX run theirs in one compiled loop,
        and the trackers take the group's losses at once (the same means)."""
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution == 1:
            return super().make_train_function(force=True)
        descend = torch.compile(self._descend) if self.jit_compile else self._descend

        def train_function(batches):
            weights = self.trainable_weights
            steps = [descend(data, weights) for data in batches]
            return self.update_loss_metrics({name: torch.stack([s[name] for s in steps]) for name in steps[0]})

        self.train_function = train_function
        return self.train_function

    def make_test_function(self, force=False):
        """Test steps, `steps_per_execution` batches per call (see `make_train_function`)."""
        if self.test_function is not None and not force:
            return self.test_function
        if self.steps_per_execution == 1:
            return super().make_test_function(force=True)

        def test_function(batches):
            logs = None
            for data in batches:
                logs = self.test_step(data)
            return logs

        self.test_function = test_function
        return self.test_function

    def make_predict_function(self, force=False):
        """Predictions, `steps_per_execution` batches per call, joined (see `make_train_function`)."""
        if self.predict_function is not None and not force:
            return self.predict_function
        if self.steps_per_execution == 1:
            return super().make_predict_function(force=True)

        def predict_function(batches):
            with torch.no_grad():
                outputs = [self.predict_step(data) for data in batches]
            return keras.tree.map_structure(lambda *parts: torch.cat(parts), *outputs)

        self.predict_function = predict_function
        return self.predict_function

    def test_step(self, data):
        x, y = self._data(data)
        with torch.no_grad():
            losses = self.compute_losses(x, y, training=False)
        return self.update_loss_metrics(losses)
