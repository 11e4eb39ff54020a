"""Images decoded from files: folders of PNG/JPEG/BMP/GIF, Hugging Face datasets, and patches cut
from photographs (Pillow decodes, `datasets` reads Arrow tables, scikit-learn ships the photographs).

A folder or a dataset is read row by row: `ImageFiles` and `DatasetRows` answer `read(index)` with
uint8 images of one size, as `data.NpyRows` does for `.npy` files, so that `data.MappedImages`
streams them batch by batch and memory stays independent of the folder's size.
"""

import hashlib
import os
import warnings

import numpy as np

from kerasae.errors import DataError

# The formats `keras.utils.image_dataset_from_directory` reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
CHANNELS = {"grayscale": 1, "rgb": 3}
SAMPLE_IMAGES = "sklearn.datasets.load_sample_images"
SHOWN_PROBLEMS = 5
CHECK_ROWS = 256


def to_array(image, color_mode, size=None, resize="crop"):
    """A PIL image as uint8 (H, W, C): its first frame, in the colour mode, resized to `size`
    (H, W) with its aspect kept by a centre crop or black padding."""
    from PIL import Image, ImageOps

    image = image.convert("L" if color_mode == "grayscale" else "RGB")
    if size is not None and image.size != (size[1], size[0]):
        fit = ImageOps.fit if resize == "crop" else ImageOps.pad
        image = fit(image, (size[1], size[0]), method=Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _decode(path, color_mode, size, resize):
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # a truncated file fails here, not later in training
        return to_array(image, color_mode, size, resize)


def list_folder(folder):
    """(paths, labels or None, class names): subfolders, when there are any, are the classes,
    in sorted order, their images found at any depth; otherwise the folder's own images."""
    if not os.path.isdir(folder):
        raise DataError(f"data.path: {folder} is not a folder")

    def images_under(root):
        found = []
        for parent, dirs, files in os.walk(root):
            dirs.sort()
            found += [os.path.join(parent, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        return found

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        return paths, None, []
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = images_under(os.path.join(folder, name))
        paths += found
        labels += [label] * len(found)
    return paths, np.asarray(labels, np.int32), classes


class ImageFiles:
    """Image files read on demand as uint8 (n, H, W, C); opening checks every file once (decodes
    it, then lets it go), drops the unreadable ones with a warning that names them, and hashes
    the bytes."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths, labels, color_mode, size, resize, where):
        self.color_mode, self.size, self.resize = color_mode, size, resize
        kept, shapes, problems, digest = [], {}, [], hashlib.sha256()
        for i, path in enumerate(paths):
            try:
                shape = _decode(path, color_mode, size, resize).shape
            except Exception as e:  # noqa: BLE001 -- Pillow raises many kinds on bad files
                problems.append(f"{path} ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
                continue
            kept.append(i)
            shapes.setdefault(shape, path)
            with open(path, "rb") as f:
                digest.update(f.read())
        if problems:
            shown = "; ".join(problems[:SHOWN_PROBLEMS]) + ("; ..." if len(problems) > SHOWN_PROBLEMS else "")
            warnings.warn(f"{where}: skipped {len(problems)} unreadable image file(s): {shown}", stacklevel=2)
        if not kept:
            raise DataError(f"{where}: no readable images ({', '.join(e.upper()[1:] for e in IMAGE_EXTENSIONS)})")
        if len(shapes) > 1:
            (a, first), (b, other) = list(shapes.items())[:2]
            raise DataError(
                f"{where}: images differ in size: {first} is {a[1]}x{a[0]}, {other} is {b[1]}x{b[0]}; "
                "set data.image_size: [H, W] to resize them"
            )
        self.paths = [paths[i] for i in kept]
        self.labels = None if labels is None else labels[kept]
        self.skipped = problems
        self.sha256 = digest.hexdigest()
        self.shape = (len(self.paths), *next(iter(shapes)))

    def __len__(self):
        return len(self.paths)

    def read(self, index):
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), *self.shape[1:]), np.uint8)
        for row, i in enumerate(index):
            out[row] = _decode(self.paths[i], self.color_mode, self.size, self.resize)
        return out

    def __getitem__(self, rows):
        return self.read(np.arange(*rows.indices(len(self))))

    def subset(self, order):
        """The same files in another order (or a part of them)."""
        copy = object.__new__(ImageFiles)
        copy.__dict__.update(self.__dict__)
        copy.paths = [self.paths[i] for i in order]
        copy.labels = None if self.labels is None else self.labels[order]
        copy.shape = (len(copy.paths), *self.shape[1:])
        return copy


class DatasetRows:
    """Rows of a Hugging Face `datasets.Dataset`'s image column as uint8 (n, H, W, C), decoded on
    demand (the table itself stays memory-mapped Arrow)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, table, column, color_mode, size, resize, where):
        self.table, self.column, self.where = table, column, where
        self.color_mode, self.size, self.resize = color_mode, size, resize
        self.shape = None
        self.shape = (len(table), *self.read([0]).shape[1:])
        digest = hashlib.sha256()
        for start in range(0, len(table), CHECK_ROWS):  # every row decodes, at one size, before training
            digest.update(self.read(np.arange(start, min(start + CHECK_ROWS, len(table)))).tobytes())
        self.sha256 = digest.hexdigest()

    def __len__(self):
        return len(self.table)

    def __getitem__(self, rows):
        return self.read(np.arange(*rows.indices(len(self))))

    def read(self, index):
        from PIL import Image

        index = [int(i) for i in np.asarray(index).reshape(-1)]
        if not index:
            return np.empty((0, *self.shape[1:]), np.uint8)
        out = []
        for i, image in zip(index, self.table[index][self.column]):
            if not isinstance(image, Image.Image):
                image = Image.fromarray(np.asarray(image, dtype=np.uint8))
            array = to_array(image, self.color_mode, self.size, self.resize)
            expected = out[0].shape if out else self.shape and self.shape[1:]
            if expected and array.shape != expected:
                raise DataError(
                    f"{self.where}: row {i} is {array.shape[1]}x{array.shape[0]}, others {expected[1]}x{expected[0]}; "
                    "set data.image_size: [H, W] to resize them"
                )
            out.append(array)
        return np.stack(out)


def load_hf(section):
    """(train table, test table or None, where) of a saved dataset or a named one."""
    try:
        import datasets
    except ImportError:
        raise DataError("data.dataset 'huggingface' needs the datasets package: pip install 'kerasae[hf]'") from None
    where = section.path
    try:
        if os.path.isdir(section.path):
            loaded = datasets.load_from_disk(section.path)
        else:
            loaded = datasets.load_dataset(section.path)
    except Exception as e:  # noqa: BLE001 -- a missing file, a bad folder, no network
        raise DataError(f"data.path: cannot load dataset {where!r} ({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{where}: the dataset has splits {sorted(loaded)}; kerasae reads 'train' (and 'test')")
        train, test = loaded["train"], loaded.get("test")
    else:
        train, test = loaded, None
    for table, split in ((train, "train"), (test, "test")):
        if table is not None and section.image_column not in table.column_names:
            raise DataError(
                f"{where}: data.image_column '{section.image_column}' is not a column of its {split} split "
                f"(columns: {table.column_names})"
            )
        if table is not None and not len(table):
            raise DataError(f"{where}: its {split} split has no rows")
    return train, test, where


def hf_labels(table, section):
    """The label column as int32, or None when the recipe names none or the table lacks it."""
    if table is None or not section.label_column or section.label_column not in table.column_names:
        return None
    labels = np.asarray(table[section.label_column])
    if labels.dtype.kind not in "ui" or labels.ndim != 1:
        raise DataError(f"data.label_column '{section.label_column}': must hold integers, got {labels.dtype}")
    return labels.astype(np.int32)


def photographs(section):
    """The uint8 photographs patches are cut from: a folder's images, or scikit-learn's samples."""
    if section.path is None:
        from sklearn.datasets import load_sample_images

        images = load_sample_images().images
        if section.color_mode == "grayscale":
            images = [np.round(im @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None] for im in images]
        return images, SAMPLE_IMAGES
    paths, _, _ = list_folder(section.path)
    files = [ImageFiles([p], None, section.color_mode, None, "crop", section.path) for p in paths]
    return [f.read([0])[0] for f in files], os.path.abspath(section.path)


def cut_patches(images, size, n, seed):
    """n float32 patches (n, size, size, C) in [0, 1] at random places of random images."""
    usable = [im for im in images if im.shape[0] >= size and im.shape[1] >= size]
    if not usable:
        raise DataError(f"data.patch_size: {size} is larger than every image")
    rng = np.random.default_rng(seed)
    which = rng.integers(len(usable), size=n)
    out = np.empty((n, size, size, usable[0].shape[2]), np.float32)
    for i, k in enumerate(which):
        im = usable[k]
        top, left = rng.integers(im.shape[0] - size + 1), rng.integers(im.shape[1] - size + 1)
        out[i] = im[top : top + size, left : left + size] / 255.0
    return out


def zca(train, others, epsilon):
    """ZCA-whitens patches by the training patches' statistics: x -> (x - mean) U diag(1 / sqrt(l + eps)) U^T."""
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    centred = flat - mean
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred / len(flat))
    w = (vectors / np.sqrt(np.maximum(eigenvalues, 0.0) + epsilon)) @ vectors.T
    return [((x.reshape(len(x), -1) - mean) @ w).astype(np.float32).reshape(x.shape) for x in (train, *others)]
