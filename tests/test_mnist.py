"""The seed's recipes on the full MNIST ($KERASAE_DATA_DIR/mnist.npz): skipped without it, a failure in CI."""

import json
import os

import numpy as np
import pytest
from conftest import FULL_MNIST_SIZES, RECIPES, full_mnist

from kerasae import cli, data
from kerasae.spec import recipe
from kerasae.store import zoo

# Training on the full set is the same claim on every backend (the sweep and test_models check that
# each backend trains every family): it runs in one suite.
pytestmark = [pytest.mark.mnist, pytest.mark.once]


@pytest.fixture(autouse=True)
def _mnist_only(monkeypatch):
    """The recipes' `dataset: mnist` must find the full set, never the offline fallback."""
    monkeypatch.setenv(data.DATA_DIR_ENV, os.path.dirname(full_mnist()))


# What these tests do not check stays off: the SavedModel, the FID (test_fid.py has its own), most figures.
QUICK = ("outputs.export_saved_model=false", "outputs.fid_samples=0", "outputs.figures=[loss]")


def _train(zoo_dir, name, *overrides):
    overrides = (*QUICK, *overrides)
    args = [
        "train",
        os.path.join(RECIPES, name),
        "--zoo",
        zoo_dir,
        "--quiet",
        *[a for o in overrides for a in ("--set", o)],
    ]
    assert cli.main(args) == 0
    r = recipe.load(os.path.join(RECIPES, name), overrides)
    entry = zoo.entry_path(r.name, zoo_dir)
    with open(os.path.join(entry, zoo.METRICS_FILE)) as f:
        return r, zoo.load(entry), json.load(f)


def test_seed_ae_learns_mnist(zoo_dir):
    r, model, metrics = _train(zoo_dir, "ae.yaml", "train.epochs=5")
    history = [
        float(line.split(",")[1])
        for line in open(os.path.join(zoo.entry_path(r.name, zoo_dir), zoo.HISTORY_FILE)).read().splitlines()[1:]
    ]
    assert history[-1] < history[0]
    # It must beat the best input-independent guess: every pixel ~ Bernoulli(its training mean).
    d = data.load(r.data)
    p = np.clip(d.x_train.mean(axis=0), 1e-7, 1 - 1e-7)
    mean_image_bce = -np.mean(np.sum(d.x_test * np.log(p) + (1 - d.x_test) * np.log(1 - p), axis=(1, 2, 3)))
    assert metrics["test"]["reconstruction_loss"] < 0.8 * mean_image_bce
    assert metrics["data"]["name"] == "mnist" and metrics["data"]["full_sizes"] == FULL_MNIST_SIZES


def test_seed_dae_removes_masking_noise(zoo_dir):
    # The seed's DAE with half the pixels masked: within a few epochs its output is
    # closer to the clean digit than the masked input. (At 20% the masked input is
    # already close; the seed's 200 epochs are needed before the output beats it.)
    r, model, _ = _train(zoo_dir, "dae.yaml", "train.epochs=6", "corruption.p=0.5")
    clean = data.load(r.data).x_test[:2000]
    noisy = model.corrupt(clean)
    assert abs((noisy != clean).sum() / (clean != 0).sum() - 0.5) < 0.02  # half the ink is masked
    assert np.mean((model.denoise(noisy) - clean) ** 2) < np.mean((noisy - clean) ** 2)
