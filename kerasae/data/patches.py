"""`dataset: patches`: square patches of photographs, ZCA-whitened when asked."""

import numpy as np

from kerasae.data import dataset
from kerasae.data import images as images_module


def load(section, seed):
    """`dataset: patches`: square patches of photographs, ZCA-whitened by the training patches' statistics
    when asked; whitened patches are not confined to [0, 1] (a recipe pairs them with an mse loss)."""
    photos, source = images_module.photographs(section)
    x = images_module.cut_patches(photos, section.patch_size, section.patches, seed)
    n_test = dataset.held_out(len(x), section)
    x_train, x_test = x[:-n_test], x[-n_test:]
    if section.limit:
        x_train, x_test = x_train[: section.limit], x_test[: section.limit]
    n_val = dataset.validation_size(len(x_train), section)
    x_train, x_val = x_train[: len(x_train) - n_val], x_train[len(x_train) - n_val :]
    if section.whiten == "zca":
        x_train, x_val, x_test = images_module.zca(x_train, (x_val, x_test), section.whiten_epsilon)
    elif section.binarize == "threshold":
        x_train, x_val, x_test = ((a > section.threshold).astype(np.float32) for a in (x_train, x_val, x_test))
    elif section.binarize == "bernoulli":
        rng = np.random.default_rng(seed)
        x_val, x_test = ((rng.random(a.shape, dtype=np.float32) < a).astype(np.float32) for a in (x_val, x_test))
    record = {
        "name": "patches",
        "source": f"{section.patch_size}x{section.patch_size} patches of {len(photos)} photographs ({source})",
        "sha256": {"x_train": dataset.sha256(x_train), "x_test": dataset.sha256(x_test)},
        "full_sizes": {"train": len(x_train) + len(x_val), "test": len(x_test)},
        "whiten": section.whiten,
        "binarize": section.binarize,
        "sizes": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        "image_shape": list(x_train.shape[1:]),
    }
    return dataset.Dataset(x_train, None, x_val, None, x_test, None, record)
