"""Images that stay on disk: `MappedImages` reads rows of a `.npy` file, of image files or of a Hugging Face
dataset as float32 (N, H, W, C) in [0, 1] when indexed; `streamed` makes the `Dataset` of such images and
`batches` feeds them to `fit` one batch at a time."""

import numpy as np

from kerasae.data import dataset

# Threads that decode image files ahead of the training step (PIL releases the GIL while it decodes).
DECODE_WORKERS = 2


class MappedImages:
    """Rows `start:stop` of an `NpyRows` image file, read as float32 (N, H, W, C) in [0, 1] on
    indexing, binarized by threshold when asked. Only the rows asked for leave the disk."""

    def __init__(self, array, start=0, stop=None, threshold=None, bernoulli_seed=None):
        self.array, self.start = array, start
        self.stop = len(array) if stop is None else stop
        self.threshold = threshold
        # Held-out rows binarized by a fixed draw: seeded by the first row asked for, so that
        # the same batch of a validation pass always gets the same draw.
        self.bernoulli_seed = bernoulli_seed

    def __len__(self):
        return self.stop - self.start

    @property
    def shape(self):
        rest = self.array.shape[1:]
        return (len(self), *(rest if len(rest) == 3 else (*rest, 1)))

    def rows(self, start, stop, bernoulli_seed=None):
        return MappedImages(self.array, self.start + start, self.start + stop, self.threshold, bernoulli_seed)

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index)
        images = scaled(self.array.read(self.start + index)).reshape(len(index), *self.shape[1:])
        if self.threshold is not None:
            images = (images > self.threshold).astype(np.float32)
        if self.bernoulli_seed is not None:
            first = int(index.min()) if len(index) else 0
            draw = np.random.default_rng([self.bernoulli_seed, first]).random(images.shape, dtype=np.float32)
            images = (draw < images).astype(np.float32)
        return images


def scaled(x):
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def streamed(section, seed, images, y_train, test, y_test, record):
    """A `dataset.Dataset` of streamed training and validation images (`MappedImages`) and a test split read in."""
    if section.limit:
        images, test = images.rows(0, min(section.limit, len(images))), test.rows(0, min(section.limit, len(test)))
        y_train = None if y_train is None else y_train[: section.limit]
        y_test = None if y_test is None else y_test[: section.limit]
    n_val = dataset.validation_size(len(images), section)
    n_fit = len(images) - n_val
    bernoulli = section.binarize == "bernoulli"
    x_test = test[slice(None)]
    if bernoulli:
        # Held-out images get one fixed draw: the test split now, validation batch by batch.
        x_test = (np.random.default_rng(seed).random(x_test.shape, dtype=np.float32) < x_test).astype(np.float32)
    record.update(
        binarize=section.binarize,
        sizes={"train": n_fit, "validation": n_val, "test": len(x_test)},
        image_shape=list(images.shape[1:]),
    )
    return dataset.Dataset(
        images.rows(0, n_fit),
        None if y_train is None else y_train[:n_fit],
        images.rows(n_fit, n_fit + n_val, seed if bernoulli else None),
        None if y_train is None else y_train[n_fit:],
        x_test,
        y_test,
        record,
    )


def batches(x, y, rows, batch_size):
    """`rows` of a `MappedImages` (and their labels) read batch by batch, as `fit` asks."""
    from kerasae.backend.common import Batches
    from kerasae.data.npy import NpyRows

    decoded = not isinstance(x.array, NpyRows)  # image files: decoded by threads ahead of the step
    arrays = (x,) if y is None else (x, y)
    workers = DECODE_WORKERS if decoded else 1
    return Batches(arrays, rows, batch_size, workers=workers, use_multiprocessing=False, max_queue_size=8)
