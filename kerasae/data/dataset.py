"""What every loader returns: a `Dataset` of float32 images (N, H, W, C) in [0, 1] split into train /
validation / test with its record, and the checks and splits the loaders share."""

import dataclasses
import hashlib
import os
import zipfile

import numpy as np

from kerasae.errors import DataError


@dataclasses.dataclass
class Dataset:
    """Images in [0, 1], shaped (N, H, W, C), with optional integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_val: np.ndarray
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    record: dict
    # One-class data (`data.classes`): which test items are of the other classes, the anomalies.
    anomalous: np.ndarray | None = None
    # A table's or a series' fitted `tables.Transform` (plain values), written into the entry.
    transform: dict | None = None
    # A series' held-out parts, kept whole for scores per time step (`kerasae.data.series.Series`).
    series: object = None

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])


def sha256(array, rows_per_chunk=4096):
    """Of the array's bytes as stored; read in chunks, so a file on disk stays there."""
    digest = hashlib.sha256()
    for start in range(0, max(len(array), 1), rows_per_chunk):
        digest.update(np.ascontiguousarray(array[start : start + rows_per_chunk]).tobytes())
    return digest.hexdigest()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_npz(path, keys, what):
    """Reads named arrays from an .npz file, turning every failure into a DataError."""
    if not os.path.exists(path):
        raise DataError(f"{what}: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k is not None and k not in f.files]
            required = [k for k in missing if k == keys[0]]
            if required:
                raise DataError(f"{path}: array '{required[0]}' not found; the file has {sorted(f.files)}")
            return {k: f[k] for k in keys if k is not None and k in f.files}
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def as_images(x, name, where):
    """uint8 or float arrays, (N, H, W) or (N, H, W, C), to float32 (N, H, W, C) in [0, 1]."""
    return floats(checked_images(x, name, where))


def floats(x, threshold=None):
    """Checked images as float32 in [0, 1], binarized (> threshold) when one is given. uint8 images
    go through a 256-entry table: one float copy of the raw images, exactly (x / 255 > t)."""
    if x.dtype == np.uint8:
        table = np.arange(256, dtype=np.float32) / 255.0
        return (table if threshold is None else (table > threshold).astype(np.float32))[x]
    return x if threshold is None else (x > threshold).astype(np.float32)


def checked_images(x, name, where):
    """uint8 or float arrays, (N, H, W) or (N, H, W, C), as (N, H, W, C): uint8 as they are, other
    numbers as float32 in [0, 1]."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "uif":
        raise DataError(f"{where}: array '{name}' must be numeric, got dtype {getattr(x, 'dtype', type(x))}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or min(x.shape) < 1:
        raise DataError(f"{where}: array '{name}' must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: array '{name}' contains NaN or inf")
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    if x.dtype.kind in "ui" or hi > 1.0:
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: array '{name}' has values in [{lo}, {hi}]; expected [0, 1] or [0, 255]")
        x = x / 255.0
    elif lo < 0:
        raise DataError(f"{where}: array '{name}' has values in [{lo}, {hi}]; expected [0, 1] or [0, 255]")
    return x


def as_labels(y, n, name, where):
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "ui":
        raise DataError(f"{where}: labels '{name}' must be {n} integers, got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int32)


def validation_size(n, section):
    """Images held out of n for validation: the last `validation_split` of them, at least one if any."""
    n_val = int(round(n * section.validation_split))
    n_val = 1 if section.validation_split > 0 and n_val == 0 else n_val
    if n_val >= n:
        raise DataError(f"data.validation_split={section.validation_split} leaves no training images")
    return n_val


def held_out(n, section):
    """How many of n images a folder or a test-less dataset holds out for testing."""
    n_test = max(1, int(round(n * section.test_split)))
    if n_test >= n:
        raise DataError(f"data.test_split={section.test_split} leaves no training images of {n}")
    return n_test


def one_class(x_train, y_train, y_test, classes, where):
    """Training images of `classes` only, and which test images are of the others."""
    if y_train is None or y_test is None:
        raise DataError(f"data.classes: needs labels of the training and test images, and {where} has none")
    missing = sorted(set(classes) - set(np.unique(y_train).tolist()))
    if missing:
        raise DataError(f"data.classes: no training image of class {missing[0]} in {where}")
    normal = np.isin(y_train, classes)
    anomalous = ~np.isin(y_test, classes)
    if not anomalous.any() or anomalous.all():
        raise DataError(f"data.classes: the test images of {where} must hold both these classes and others")
    return x_train[normal], y_train[normal], anomalous


def from_arrays(section, seed, arrays, record):
    """A `Dataset` of in-memory arrays (x_train, y_train, x_test, y_test; labels may be None) and their
    record: checked, limited, one-class where asked, split, made floats and binarized as the recipe says."""
    x_train, y_train, x_test, y_test = arrays
    where = record.pop("where", record["source"])
    keys = section.keys
    # Hashes of the arrays as stored, comparable with published checksums.
    record["sha256"] = {"x_train": sha256(x_train), "x_test": sha256(x_test)}
    x_train = checked_images(x_train, keys.x_train, where)
    x_test = checked_images(x_test, keys.x_test or "x_test", where)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{where}: train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ")
    y_train = as_labels(y_train, len(x_train), keys.y_train, where)
    y_test = as_labels(y_test, len(x_test), keys.y_test, where)
    record["full_sizes"] = {"train": len(x_train), "test": len(x_test)}

    if section.limit:
        x_train, x_test = x_train[: section.limit], x_test[: section.limit]
        y_train = None if y_train is None else y_train[: section.limit]
        y_test = None if y_test is None else y_test[: section.limit]
    anomalous = None
    if section.classes:
        x_train, y_train, anomalous = one_class(x_train, y_train, y_test, section.classes, where)
        record["classes"] = list(section.classes)
    n_val = validation_size(len(x_train), section)
    n_fit = len(x_train) - n_val
    x_val, y_val = x_train[n_fit:], None if y_train is None else y_train[n_fit:]
    x_train, y_train = x_train[:n_fit], None if y_train is None else y_train[:n_fit]

    threshold = section.threshold if section.binarize == "threshold" else None
    x_train, x_val, x_test = (floats(x, threshold) for x in (x_train, x_val, x_test))
    rng = np.random.default_rng(seed)
    if section.binarize == "bernoulli":
        # Held-out images get one fixed draw so that evaluations are comparable.
        x_val, x_test = ((rng.random(x.shape, dtype=np.float32) < x).astype(np.float32) for x in (x_val, x_test))
    record.update(
        binarize=section.binarize,
        sizes={"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        image_shape=list(x_train.shape[1:]),
    )
    if anomalous is not None:
        record["sizes"]["test_anomalous"] = int(anomalous.sum())
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, record, anomalous)
