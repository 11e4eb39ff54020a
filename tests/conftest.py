"""Shared fixtures: small synthetic data sets and recipes, an isolated zoo, no network; which
tests a suite runs.

`tasks.py test` runs the suite once per backend. A test marked `once` is backend-independent
(the recipe schema, the page's JavaScript, the cards): it runs in the suite of
$KERASAE_ONCE_BACKEND only (every suite when unset). A test marked `backends(...)` runs only on
those backends. A test marked `slow` runs with `--slow` only. The others are *deselected*, not
skipped, so that a suite reports `0 skipped` and any skip is a signal.
"""

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

# Tests never touch the network: the MNIST download step is skipped.
os.environ["KERASAE_OFFLINE"] = "1"
# ... nor does a Hugging Face dataset name: `datasets` and the Hub stay offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX's compiled programs go to a cache of the tests' own, shared by the suite's workers and the
# processes they start (never the user's ~/.cache/kerasae).
os.environ.setdefault("KERASAE_JAX_CACHE", os.path.join(tempfile.gettempdir(), f"kerasae-tests-jax-{os.getuid()}"))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
# Set by .ci/run: there a missing browser or data file fails the tests that need it instead of skipping them.
REQUIRE_BROWSER_ENV = "KERASAE_REQUIRE_BROWSER"
REQUIRE_DATA_ENV = "KERASAE_REQUIRE_DATA"
ONCE_ENV = "KERASAE_ONCE_BACKEND"


def pytest_addoption(parser):
    parser.addoption(
        "--slow",
        action="store_true",
        help="also run the slow tier: the 30-examples-per-family sweep, the benchmark diagnostics, the latency smoke",
    )


def pytest_configure(config):
    if config.getoption("--slow"):
        os.environ.setdefault("KERASAE_SWEEP_EXAMPLES", "30")


def pytest_collection_modifyitems(config, items):
    import keras

    here = keras.backend.backend()
    once_here = os.environ.get(ONCE_ENV, here) == here
    slow = config.getoption("--slow")

    def runs_here(item):
        backends = item.get_closest_marker("backends")
        return (
            (backends is None or here in backends.args)
            and (once_here or item.get_closest_marker("once") is None)
            and (slow or item.get_closest_marker("slow") is None)
        )

    deselected = [item for item in items if not runs_here(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if runs_here(item)]


def unavailable(what, env):
    """Skips a test for lack of `what` on this machine; fails it where $env says it must run (CI)."""
    if os.environ.get(env):
        pytest.fail(f"{what} (${env} is set: this run must have it)")
    pytest.skip(what)


FULL_MNIST_SIZES = {"train": 60_000, "test": 10_000}


def full_mnist():
    """The path of the full MNIST file, $KERASAE_DATA_DIR/mnist.npz (60,000 + 10,000 digits)."""
    path = os.path.join(os.environ.get("KERASAE_DATA_DIR", ""), "mnist.npz")
    if not os.path.isfile(path):
        unavailable("needs the full MNIST at $KERASAE_DATA_DIR/mnist.npz", REQUIRE_DATA_ENV)
    with np.load(path) as f:
        sizes = {"train": len(f["y_train"]), "test": len(f["y_test"])}
    assert sizes == FULL_MNIST_SIZES, f"{path} is not the full MNIST: {sizes}"
    return path


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


def _shared(tmp_path_factory, name, make):
    """A file or folder made once per test run and shared by its pytest-xdist workers: the first to
    get the lock makes it, the others wait for it and use it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    path = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (root / f"{name}.done").exists():
            make(path)
            (root / f"{name}.done").touch()
    return path


@pytest.fixture(scope="session")
def mnist_like(tmp_path_factory):
    """A small .npz in the layout of keras.datasets.mnist (600 train, 200 test)."""

    def make(path):
        x_train, y_train = digit_images(600, seed=1)
        x_test, y_test = digit_images(200, seed=2)
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    return str(_shared(tmp_path_factory, "mnist.npz", make))


def shared_recipes(data_path):
    """The entries of the shared zoo: trained once per suite, read by many tests."""
    return [
        # An AE for the commands and the FID of its gmm sampler.
        small_recipe("ae", data_path, epochs=1, outputs={"fid_samples": 300}),
        # A DAE that restores Gaussian noise within a few epochs on these 480 images (20% masking
        # barely moves them; the seed's masking DAE is checked on the full MNIST in test_mnist.py).
        small_recipe(
            "dae",
            data_path,
            epochs=10,
            model={"encoder": [], "latent_dim": 64, "latent_activation": "sigmoid"},
            train={"learning_rate": 0.01},
            corruption={"type": "gaussian", "sigma": 0.4},
        ),
        # A 2-D VAE with every figure, the NLL, the FID of both samplers and a SavedModel.
        small_recipe(
            "vae",
            data_path,
            epochs=3,
            model={"latent_dim": 2},
            outputs={
                "figures": None,
                "epochs": [1, 3],
                "nll_samples": 200,
                "fid_samples": 300,
                "export_saved_model": True,
            },
        ),
        small_recipe("cvae", data_path, epochs=1, outputs={"export_saved_model": True, "figures": ["filters"]}),
    ]


@pytest.fixture(scope="session")
def shared_zoo(tmp_path_factory, mnist_like):
    """A zoo of small entries (test-ae, test-dae, test-vae, test-cvae) trained once per test run through
    the training command's own path. Read it; copy an entry (`copy_entry`) before writing into it."""

    def make(folder):
        from kerasae.run import train
        from kerasae.spec import recipe

        for spec in shared_recipes(mnist_like):
            train.run(recipe.validate(spec), str(folder), verbose=0)

    return str(_shared(tmp_path_factory, "shared-zoo", make))


def copy_entry(shared_zoo, name, zoo_dir):
    """A copy of a shared entry in another zoo folder, to write into; returns its path."""
    import shutil

    return shutil.copytree(os.path.join(shared_zoo, name), os.path.join(zoo_dir, name))


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
