"""Data sources, one module each: MNIST (with an offline fallback), scikit-learn digits, user `.npz`,
`.npy` folders larger than memory, folders of image files, Hugging Face datasets, photograph patches,
rows of a table and windows of a time series.

Every source's `load(section, seed)` returns a `dataset.Dataset` of float32 images shaped
(N, H, W, C) with values in [0, 1], split into train / validation / test, plus a record of what
was used (name, source, sizes, sha256 of the arrays) that goes into the zoo.
The `npy`, `folder` and `huggingface` sources keep their training and validation images on disk
(`streamed.MappedImages`) and `streamed.batches` reads them one batch at a time (`images` decodes files).
"""

from kerasae.data import digits, folder, huggingface, mnist, npy, npz, patches, series, tables
from kerasae.data.dataset import Dataset, sha256
from kerasae.data.mnist import DATA_DIR_ENV, MNIST_SOURCE, OFFLINE_ENV
from kerasae.data.npy import NpyRows
from kerasae.data.series import step_labels
from kerasae.data.streamed import MappedImages, batches

# `data.dataset` -> its loader: load(section, seed) -> Dataset.
LOADERS = {
    "mnist": mnist.load,
    "digits": digits.load,
    "npz": npz.load,
    "npy": npy.load,
    "folder": folder.load,
    "huggingface": huggingface.load,
    "patches": patches.load,
    "table": tables.load_table,
    "sequence": series.load_series,
}
# The sources whose training images stay on disk (`MappedImages`).
STREAMED = ("npy", "folder", "huggingface")
# The data sets of handwritten digits: figure titles and card captions call their images digits.
DIGIT_DATASETS = ("mnist", "digits")


def subject(dataset):
    """What a recipe's `data.dataset` holds, as figures and cards name it: "digit" or "image"."""
    return "digit" if dataset in DIGIT_DATASETS else "image"


def load(section, seed=0):
    """Loads, checks, splits and (optionally) binarizes the data a recipe asks for.

    Args:
        section: the recipe's `data` section.
        seed: seeds the fixed Bernoulli binarization of validation and test images.

    Returns:
        A `Dataset`. With `binarize: bernoulli` the training images stay grey:
        the model redraws them in every training step.
    """
    return LOADERS[section.dataset](section, seed)


__all__ = [
    "DATA_DIR_ENV",
    "MNIST_SOURCE",
    "OFFLINE_ENV",
    "LOADERS",
    "STREAMED",
    "Dataset",
    "MappedImages",
    "NpyRows",
    "batches",
    "load",
    "sha256",
    "step_labels",
    "subject",
]
