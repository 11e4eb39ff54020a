"""Shared fixtures: small synthetic data sets and recipes, an isolated zoo, no network."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Tests never touch the network: the MNIST download step is skipped.
os.environ["KERASAE_OFFLINE"] = "1"
# ... nor does a Hugging Face dataset name: `datasets` and the Hub stay offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")


def digit_images(n, size=28, seed=0):
    """n labelled 28x28 uint8 digits: scikit-learn's 8x8 digits scaled up 3x and padded.

    Real digit shapes (so models have something to learn) at MNIST's layout, in
    a few kilobytes instead of MNIST's 11 MB.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(digits.images), n)
    big = np.kron(digits.images[idx], np.ones((3, 3))) / 16.0  # (n, 24, 24)
    pad = (size - 24) // 2
    images = np.pad(big, ((0, 0), (pad, size - 24 - pad), (pad, size - 24 - pad)))
    return (images * 255).astype(np.uint8), digits.target[idx].astype(np.uint8)


@pytest.fixture(scope="session")
def mnist_like(tmp_path_factory):
    """A small .npz in the layout of keras.datasets.mnist (600 train, 200 test)."""
    path = tmp_path_factory.mktemp("data") / "mnist.npz"
    x_train, y_train = digit_images(600, seed=1)
    x_test, y_test = digit_images(200, seed=2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


@pytest.fixture
def zoo_dir(tmp_path):
    return str(tmp_path / "zoo")


@pytest.fixture
def write_recipe(tmp_path):
    """Writes YAML text (dedented) to a file and returns its path."""

    def write(text, name="recipe.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


def small_recipe(family="ae", data_path=None, epochs=2, **sections):
    """A recipe dict for a fast run on the small MNIST-like file."""
    recipe = {
        "name": f"test-{family}",
        "model": {"family": family, "encoder": [32], "latent_dim": 8},
        "data": {"dataset": "mnist", "path": data_path, "binarize": "threshold", "validation_split": 0.2},
        "train": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.003, "seed": 1},
        "outputs": {"figures": [], "export_saved_model": False, "nll_samples": 50, "fid_samples": 0},
    }
    if family == "hvae":  # its stochastic layers replace encoder and latent_dim
        recipe["model"] = {"family": family, "stochastic_layers": SMALL_HIERARCHY}
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value)
    return recipe


SMALL_HIERARCHY = [{"hidden": [32], "latent_dim": 8}, {"hidden": [16], "latent_dim": 4}]


def run_python(code, backend=None, timeout=300, args=()):
    """Runs code in a fresh interpreter (optionally on another backend); returns stdout."""
    env = dict(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert result.returncode == 0, "\n".join(
        line for line in result.stderr.splitlines() if not line.lstrip().startswith("[")
    )[-3000:]
    return result.stdout
