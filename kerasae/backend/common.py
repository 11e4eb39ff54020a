"""What every backend's trainer shares (as Keras's `keras/src/trainers/trainer.py` is shared)."""

import itertools

import keras
import numpy as np


class LossTracking:
    """Per-loss `Mean` trackers reported as logs."""

    def update_loss_metrics(self, losses):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    def _data(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        return x, y


def take_group(iterator, steps, stack):
    """The next `steps` batches of a `fit`'s iterator: (their leaves stacked, True) when there are
    that many and of one shape, else (the batches as a list, False): a short group at an epoch's
    end, taken step by step. No batch at all: ([], False)."""
    batches = list(itertools.islice(iterator, steps))
    shapes = {tuple(tuple(leaf.shape) for leaf in keras.tree.flatten(batch)) for batch in batches}
    if len(batches) == steps and len(shapes) == 1:
        return keras.tree.map_structure(lambda *leaves: stack(leaves), *batches), True
    return batches, False


def split_same_shape(batches, stack):
    """(the leading batches of the first batch's shape, stacked, or None when fewer than two;
    the batches after them): a short group's full batches can still run as one compiled loop."""
    shapes = [tuple(tuple(leaf.shape) for leaf in keras.tree.flatten(batch)) for batch in batches]
    same = next((i for i, shape in enumerate(shapes) if shape != shapes[0]), len(shapes))
    if same < 2:
        return None, batches
    return keras.tree.map_structure(lambda *leaves: stack(leaves), *batches[:same]), batches[same:]


class Batches(keras.utils.PyDataset):
    """Batches of in-memory arrays, their rows in a given order, each gathered when `fit` asks."""

    def __init__(self, arrays, rows, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.arrays, self.rows, self.batch_size = arrays, rows, batch_size

    def __len__(self):
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, index):
        rows = self.rows[index * self.batch_size : (index + 1) * self.batch_size]
        return tuple(a[rows] for a in self.arrays)


def array_feed(model, x, y, batch_size):
    """The batches of in-memory arrays in a given row order, for `model`'s `fit`: `feed(rows)`
    returns (a `Batches`, its number of batches). Passing `x[rows]` instead made the epoch's whole reordered
    copy before its first step: ~90 ms of a 0.45 s AE epoch on all of MNIST, on JAX; batch by
    batch, the gathers of the next group overlap the steps of this one."""
    arrays = tuple(a for a in (x, y) if a is not None)
    return lambda rows: (Batches(arrays, np.asarray(rows), batch_size), -(-len(rows) // batch_size))


def array_batches(x, y, batch_size):
    """Arrays in order as `Batches` (see `array_feed`)."""
    return array_feed(None, x, y, batch_size)(np.arange(len(x)))[0]


def conv(x, kernel, strides):
    """Keras's "same"-padded 2-D convolution of channels-last images (kernel (kh, kw, in, out))."""
    return keras.ops.conv(x, kernel, strides=strides, padding="same")


def conv_transpose(x, kernel, strides):
    """Keras's "same"-padded 2-D transposed convolution (kernel (kh, kw, out, in)): the output is
    `strides` times the input's size."""
    return keras.ops.conv_transpose(x, kernel, strides=strides, padding="same")


def padded_rows(n, batch_size):
    """Rows that n inputs fed `batch_size` at a time are padded to before a call outside
    training (`kerasae.models.autoencoder.run`): n as they are, where a new batch shape costs
    nothing (TensorFlow's eager calls and its retracing functions, PyTorch). JAX overrides it."""
    return n


def variable_numpy(variable):
    """A Keras variable's value as a numpy array."""
    return keras.ops.convert_to_numpy(variable.value)


def sigmoid_cross_entropy(target, logits):
    """-log p(target | logits) of each Bernoulli pixel, elementwise, in the stable form
    max(l, 0) - l * x + log(1 + exp(-|l|)) (XLA fuses it into one loop)."""
    ops = keras.ops
    return ops.relu(logits) - logits * target + ops.log1p(ops.exp(-ops.abs(logits)))
