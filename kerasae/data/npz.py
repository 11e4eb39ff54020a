"""`dataset: npz`: the user's arrays in one `.npz` file, named by `data.keys`; without a test split the last
10% of the training images are held out."""

import os

from kerasae.data import dataset


def load(section, seed=0):
    return dataset.from_arrays(section, seed, *_arrays(section))


def _arrays(section):
    keys = section.keys
    names = (keys.x_train, keys.y_train, keys.x_test, keys.y_test)
    arrays = dataset.read_npz(section.path, names, "data.path")
    x_train, y_train = arrays[keys.x_train], arrays.get(keys.y_train)
    x_test, y_test = arrays.get(keys.x_test), arrays.get(keys.y_test)
    if y_train is not None:
        dataset.as_labels(y_train, len(x_train), keys.y_train, section.path)
    if x_test is None:
        # No test split in the file: hold out the last 10%.
        n = len(x_train) - max(1, len(x_train) // 10)
        x_train, x_test = x_train[:n], x_train[n:]
        if y_train is not None:
            y_train, y_test = y_train[:n], y_train[n:]
    record = {"name": os.path.basename(section.path), "source": os.path.abspath(section.path)}
    return (x_train, y_train, x_test, y_test), record
