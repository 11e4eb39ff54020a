"""`dataset: huggingface`: a Hugging Face dataset on disk, decoded row by row."""

import os

import numpy as np

from kerasae.data import dataset, streamed
from kerasae.data import images as images_module
from kerasae.data.streamed import MappedImages
from kerasae.errors import DataError


def load(section, seed):
    """`dataset: huggingface`: its train split (and test split, else the last `test_split` of the
    train split, shuffled by the seed), decoded row by row."""
    train, test, where = images_module.load_hf(section)
    if test is None:
        order = np.random.default_rng(seed).permutation(len(train))
        n_test = dataset.held_out(len(train), section)
        train, test = train.select(order[:-n_test]), train.select(order[-n_test:])
    size, mode, column = section.image_size, section.color_mode, section.image_column
    rows = [images_module.DatasetRows(t, column, mode, size, section.resize, where) for t in (train, test)]
    if rows[0].shape[1:] != rows[1].shape[1:]:
        raise DataError(f"{where}: train images {rows[0].shape[1:]} and test images {rows[1].shape[1:]} differ")
    threshold = section.threshold if section.binarize == "threshold" else None
    record = {
        "name": os.path.basename(os.path.normpath(section.path)),
        "source": f"datasets: {section.path}",
        "streamed": True,
        "sha256": {"x_train": rows[0].sha256, "x_test": rows[1].sha256},
        "full_sizes": {"train": len(rows[0]), "test": len(rows[1])},
    }
    return streamed.streamed(
        section,
        seed,
        MappedImages(rows[0], threshold=threshold),
        images_module.hf_labels(train, section),
        MappedImages(rows[1], threshold=threshold),
        images_module.hf_labels(test, section),
        record,
    )
