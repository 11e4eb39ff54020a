"""What every backend's trainer shares (as Keras's `keras/src/trainers/trainer.py` is shared)."""

import itertools

import keras


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


def no_feed(*args):
    """JAX and PyTorch slice numpy arrays batch by batch: no data pipeline to build (None)."""
    return None


def conv(x, kernel, strides):
    """Keras's "same"-padded 2-D convolution of channels-last images (kernel (kh, kw, in, out))."""
    return keras.ops.conv(x, kernel, strides=strides, padding="same")


def conv_transpose(x, kernel, strides):
    """Keras's "same"-padded 2-D transposed convolution (kernel (kh, kw, out, in)): the output is
    `strides` times the input's size."""
    return keras.ops.conv_transpose(x, kernel, strides=strides, padding="same")
