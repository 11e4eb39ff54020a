"""`dataset: npy`: a folder of `.npy` files (x_train, and optionally y_train, x_test, y_test) whose
training and validation images stay on disk, read row by row (`NpyRows`)."""

import os

import numpy as np

from kerasae.data import dataset, streamed
from kerasae.data.streamed import MappedImages
from kerasae.errors import DataError

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


def load(section, seed):
    """`dataset: npy`: training and validation images stay on disk; the test split is read."""
    folder = section.path
    if not os.path.isdir(folder):
        raise DataError(f"data.path: {folder} is not a folder of .npy files")
    arrays = {name: _open_npy(folder, name, name == "x_train") for name in NPY_FILES}
    where = os.path.abspath(folder)
    x_file, test_file = arrays["x_train"], arrays["x_test"]
    _check_mapped(x_file, "x_train", where)
    y_train = dataset.as_labels(arrays["y_train"], len(x_file), "y_train", where)
    threshold = section.threshold if section.binarize == "threshold" else None
    images = MappedImages(x_file, threshold=threshold)
    if test_file is None:  # no test split in the folder: hold out the last 10%
        n = len(x_file) - max(1, len(x_file) // 10)
        images, test = images.rows(0, n), images.rows(n, len(x_file))
        y_train, y_test = (None, None) if y_train is None else (y_train[:n], y_train[n:])
    else:
        _check_mapped(test_file, "x_test", where)
        test = MappedImages(test_file, threshold=threshold)
        y_test = dataset.as_labels(arrays["y_test"], len(test_file), "y_test", where)
    if images.shape[1:] != test.shape[1:]:
        raise DataError(f"{where}: train images {images.shape[1:]} and test images {test.shape[1:]} differ")
    record = {
        "name": os.path.basename(os.path.normpath(folder)),
        "source": where,
        "streamed": True,
        "sha256": {"x_train": dataset.sha256(x_file), "x_test": dataset.sha256(test_file if test_file else x_file)},
        "full_sizes": {"train": len(images), "test": len(test)},
    }
    return streamed.streamed(section, seed, images, y_train, test, y_test, record)
