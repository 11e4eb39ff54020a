"""`dataset: digits`: scikit-learn's 1,797 8 x 8 digits, shuffled once, the last fifth the test split."""

import numpy as np

from kerasae.data import dataset


def load(section, seed=0):
    return dataset.from_arrays(section, seed, *_arrays(section))


def _arrays(section):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n = int(len(x) * 0.8)
    return (x[:n], y[:n], x[n:], y[n:]), {"name": "digits", "source": "sklearn.datasets.load_digits"}
