"""`dataset: folder`: a folder of image files (a subfolder per class), decoded as they are read."""

import os

import numpy as np

from kerasae.data import dataset, streamed
from kerasae.data import images as images_module
from kerasae.data.streamed import MappedImages


def load(section, seed):
    """`dataset: folder`: image files, shuffled by the seed, the last `test_split` of them the test split."""
    where = os.path.abspath(section.path)
    paths, labels, classes = images_module.list_folder(section.path)
    files = images_module.ImageFiles(paths, labels, section.color_mode, section.image_size, section.resize, where)
    files = files.subset(np.random.default_rng(seed).permutation(len(files)))
    n_test = dataset.held_out(len(files), section)
    train, test = files.subset(np.arange(len(files) - n_test)), files.subset(np.arange(len(files) - n_test, len(files)))
    threshold = section.threshold if section.binarize == "threshold" else None
    record = {
        "name": os.path.basename(os.path.normpath(section.path)),
        "source": where,
        "streamed": True,
        "classes": classes,
        "skipped_files": len(files.skipped),
        "sha256": {"x_train": files.sha256, "x_test": files.sha256},
        "full_sizes": {"train": len(train), "test": len(test)},
    }
    return streamed.streamed(
        section,
        seed,
        MappedImages(train, threshold=threshold),
        train.labels,
        MappedImages(test, threshold=threshold),
        test.labels,
        record,
    )
